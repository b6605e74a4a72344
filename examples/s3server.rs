//! The tests' S3-compatible server as a process, for the benchmarks (`bench/`) and for
//! trying czc against S3 by hand. Not part of czc.
//!
//!     cargo run --release --example s3server -- <root folder> [bucket...]
//!
//! Prints `http://127.0.0.1:<port>` on stdout once it listens; stops when stdin closes.
//! Signed requests use the access key `czc-test-access` and secret `czc-test-secret-key`;
//! the bucket named `public` may also be read unsigned.

// The example uses the server, not every helper the tests use.
#[allow(dead_code)]
#[path = "../tests/suite/s3server/mod.rs"]
mod s3server;

use std::io::{Read, Write};

fn main() {
    let mut args = std::env::args().skip(1);
    let Some(root) = args.next() else {
        eprintln!("usage: s3server <root folder> [bucket...]");
        std::process::exit(2);
    };
    let buckets: Vec<String> = args.collect();
    let bucket_names: Vec<&str> = buckets.iter().map(String::as_str).collect();
    std::fs::create_dir_all(&root).expect("root folder");
    let server = s3server::S3Server::start_in(std::path::Path::new(&root), &bucket_names, 0);
    println!("{}", server.endpoint);
    std::io::stdout().flush().expect("stdout");
    // Serve until whoever started us closes our stdin.
    let mut sink = Vec::new();
    let _ = std::io::stdin().read_to_end(&mut sink);
    drop(server);
}
