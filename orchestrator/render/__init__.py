"""Pure rendering: project in, per-node compose projects, releases and the GPU plan out."""
