"""nftredir's benchmark: `python -m bench` (as root). See README.md, "Performance"."""
