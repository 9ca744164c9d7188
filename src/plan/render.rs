//! Plan rendering (in progress).
