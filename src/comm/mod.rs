//! Communicator: the only place that knows about MPI.
