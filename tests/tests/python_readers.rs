//! Output files as Python users read them: numpy loads `.npy` (and the
//! other formats), and the documented xxhash recipe gives farm's digest.
//! Needs python3 with numpy and xxhash (tests/requirements.txt).

use std::process::Command;

use farm_tests::process::{farm, json};

fn python(script: &str, args: &[&str]) -> String {
    let out = Command::new("python3")
        .arg("-c")
        .arg(script)
        .args(args)
        .output()
        .expect("python3 runs (install tests/requirements.txt)");
    assert!(
        out.status.success(),
        "python failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

#[test]
fn numpy_loads_every_format_bit_for_bit() {
    let dir = tempfile::tempdir().unwrap();
    let start = "1234567";
    let n = "1000003";
    let script = r#"
import sys, numpy
path, start, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
if path.endswith(".npy"):
    a = numpy.load(path)
elif path.endswith(".bin"):
    a = numpy.fromfile(path, dtype="<f8")
else:
    a = numpy.loadtxt(path, dtype="<f8")
expected = numpy.sqrt(numpy.arange(start, start + n, dtype=numpy.float64))
assert a.dtype == numpy.float64, a.dtype
assert a.shape == (n,), a.shape
assert numpy.array_equal(a.view(numpy.uint64), expected.view(numpy.uint64)), "values differ"
print("ok")
"#;
    for extension in ["npy", "bin", "csv"] {
        let file = dir.path().join(format!("out.{extension}"));
        let file = file.to_str().unwrap();
        let out = farm(&[
            "submit", "sqrt", "--n", n, "--start", start, "--output", file, "--json",
        ]);
        json(&out);
        assert_eq!(python(script, &[file, start, n]), "ok", "{extension}");
    }
}

#[test]
fn the_documented_python_recipe_gives_the_digest() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("out.bin");
    let file = file.to_str().unwrap();
    let summary = json(&farm(&[
        "submit", "sqrt", "--n", "2000003", "--start", "5", "--output", file, "--json",
    ]));
    // The recipe from the README, word for word.
    let script = r#"
import sys, xxhash
b = open(sys.argv[1], "rb").read()
leaves = b"".join(xxhash.xxh3_128_digest(b[i:i + 32768]) for i in range(0, len(b), 32768))
print(xxhash.xxh3_128_hexdigest(leaves))
"#;
    assert_eq!(python(script, &[file]), summary["digest"].as_str().unwrap());
}
