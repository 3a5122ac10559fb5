//! Integration tests of camwire-server: real SQLite files in temporary directories and
//! real HTTP on loopback ports. One test binary, so the suite links once.

mod bad_input;
mod cli;
mod common;
mod oneshot;
mod pool;
mod restart;
mod signout;
