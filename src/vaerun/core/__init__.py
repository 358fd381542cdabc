"""The torch-free foundation every layer may import: errors, atomic writes, the names and the model
specification shared across layers, and the start-up checks of a config."""
