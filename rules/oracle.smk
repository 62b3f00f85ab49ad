# Oracle rules (segmenter for oracle-based rectification).
