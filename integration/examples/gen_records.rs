//! `cargo run --release -p sealrun-integration --example gen_records -- DIR [N] [PER_TREE]`:
//! write N (default 10000) signed run records into DIR (trees of PER_TREE, default 100,
//! below one signed dataset each), and `trust.toml` + `gen.pub` next to DIR. Prints the
//! first dataset's root digest (for `sealrun-verify lineage --artifact sha256:ROOT`).

#[path = "../tests/monitor/generate.rs"]
mod generate;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(dir) = args.first() else {
        eprintln!("usage: gen_records DIR [N] [PER_TREE]");
        std::process::exit(2);
    };
    let n = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(10_000);
    let per = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(100);
    let g = generate::generate(std::path::Path::new(dir), n, per);
    println!("{}", g.roots[0]);
    eprintln!(
        "wrote {} records and {} dataset signatures to {dir}",
        g.records,
        g.roots.len()
    );
}
