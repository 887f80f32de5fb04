//! Reconstruction: filters, back-projection, weighted back-projection.
