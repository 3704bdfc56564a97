//! The job network (`[sandbox] network = "job"`): filled in by #17.3.
