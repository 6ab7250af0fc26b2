"""moe-score: metrics of experts and their labels (routing statistics from traces, detection scores of labels)."""
