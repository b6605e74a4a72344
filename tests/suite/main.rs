//! The integration tests, one binary: the CLI, git's filter and hooks, the library as an
//! embedding program uses it, every remote kind (folder, a real S3 server, czc serve),
//! and the trust suite (hostile repositories, servers and processes). Shared helpers in
//! `util` (a test environment per test, hostile servers) and `s3server` (an S3 server and
//! a fault-injecting proxy on loopback ports).

mod s3server;
mod util;

mod cli;
mod git;
mod library;
mod remote;
mod s3;
mod serve;
mod trust;
