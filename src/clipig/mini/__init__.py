"""The mini world and the small CLIPs trained on it (`model: mini`, `model: mini-referee`): an offline
first image, knowledgeable test critics and a referee for the quality benchmark. See docs/mini.md."""
