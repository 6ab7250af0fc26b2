"""Tests of the checkout as a whole: conventions, docs, formats conformance and the rules every tool keeps."""
