"""The data sets qslm's presets and bundled models use (SST-2, WikiText-2): readers of their files, the
held-out slices the searches and the trainer share, and their official download locations."""
