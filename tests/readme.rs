//! The README and BENCHMARKS.md say what the code does: the quick start is
//! exactly the runnable part of `examples/quickstart.rs`, and every table has
//! its header separator row (so it renders).

use std::fs;

fn read(path: &str) -> String {
    fs::read_to_string(format!("{}/{path}", env!("CARGO_MANIFEST_DIR"))).unwrap()
}

#[test]
#[cfg_attr(miri, ignore = "reads files; Miri isolates the file system")]
fn the_readme_quick_start_is_the_quickstart_example() {
    let example = read("examples/quickstart.rs");
    let body: Vec<String> = example
        .lines()
        .skip_while(|l| !l.contains("--- quick start begins"))
        .skip(1)
        .take_while(|l| !l.contains("--- quick start ends"))
        .map(|l| l.strip_prefix("    ").unwrap_or(l).to_owned())
        .collect();
    assert!(body.len() > 10, "markers missing in examples/quickstart.rs");

    let readme = read("README.md");
    let shown: Vec<&str> = readme
        .lines()
        .skip_while(|l| *l != "## Quick start")
        .skip_while(|l| *l != "```rust")
        .skip(1)
        .take_while(|l| *l != "```")
        .collect();
    assert_eq!(
        shown, body,
        "README.md's quick start differs from examples/quickstart.rs; copy the code between \
         the markers into the README"
    );
}

#[test]
#[cfg_attr(miri, ignore = "reads files; Miri isolates the file system")]
fn every_markdown_table_has_its_separator_row() {
    for file in ["README.md", "BENCHMARKS.md"] {
        let text = read(file);
        let lines: Vec<&str> = text.lines().collect();
        let mut in_code = false;
        for (i, line) in lines.iter().enumerate() {
            if line.starts_with("```") {
                in_code = !in_code;
            }
            let starts_table = line.starts_with('|') && (i == 0 || !lines[i - 1].starts_with('|'));
            if in_code || !starts_table {
                continue;
            }
            let next = lines.get(i + 1).copied().unwrap_or("");
            assert!(
                next.starts_with("|-") || next.starts_with("| -") || next.starts_with("|:"),
                "{file}:{}: a table without its separator row after the header",
                i + 1
            );
        }
    }
}
