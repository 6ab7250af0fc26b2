"""moetools.demo.cache: a demo step is skipped only when its command and every input are unchanged."""

from moetools.demo.cache import fingerprint, run_cached, stamp_path


def test_a_step_reruns_exactly_when_its_command_or_an_input_changes(tmp_path):
    source, model, out = tmp_path / "slice.jsonl", tmp_path / "model", tmp_path / "trace.bin"
    source.write_text("a\n")
    model.mkdir()
    (model / "weights").write_bytes(b"w" * 10)
    runs = []

    def step():
        runs.append(1)
        out.write_text(str(len(runs)))

    logged = []
    assert run_cached("trace", logged.append, step, inputs=[model, source], outputs=[out])
    assert not run_cached("trace", logged.append, step, inputs=[model, source], outputs=[out])
    assert logged[-1].endswith("(up to date: inputs unchanged)") and len(runs) == 1
    source.write_text("a\n")  # rewritten with the same bytes (as the demo rewrites its slice): still up to date
    assert not run_cached("trace", logged.append, step, inputs=[model, source], outputs=[out])
    (model / "weights").write_bytes(b"v" * 10)  # a retrained model
    assert run_cached("trace", logged.append, step, inputs=[model, source], outputs=[out]) and len(runs) == 2
    assert run_cached("trace --other", logged.append, step, inputs=[model, source], outputs=[out])
    out.unlink()  # an output gone
    assert run_cached("trace --other", logged.append, step, inputs=[model, source], outputs=[out]) and len(runs) == 4


def test_a_failed_step_leaves_neither_its_old_output_nor_a_stamp(tmp_path):
    source, out = tmp_path / "in", tmp_path / "out"
    source.write_text("x")
    run_cached("make", print, lambda: out.write_text("old"), inputs=[source], outputs=[out])
    source.write_text("y")

    def fail():
        raise RuntimeError("no")

    try:
        run_cached("make", print, fail, inputs=[source], outputs=[out])
    except RuntimeError:
        pass
    assert not out.exists() and not stamp_path([out]).exists()
    assert fingerprint(tmp_path / "missing") is None
