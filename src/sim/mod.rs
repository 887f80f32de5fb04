//! Simulator: phantom (atoms -> potential, membranes, gold beads), tilt series + movies, truth.
