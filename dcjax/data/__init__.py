"""Host data I/O: dataset sources and their decode cache, held-out splits, compressed-set store,
score files, torchvision weight import, and the one atomic-write helper. Nothing here trains."""
