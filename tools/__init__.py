"""Command-line tools: dataset preparation, deploy, benchmark, quantization."""
