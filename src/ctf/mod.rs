//! Contrast transfer function: model (estimation and correction come later).
