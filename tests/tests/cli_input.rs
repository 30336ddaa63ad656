//! `farm` on input as people type it: what it accepts exactly, and what it
//! refuses with exit code 2 and a message naming the flag and the value.

use farm_catalog::Function;
use std::process::Command;

use farm_tests::process::{PROCESS_TIMEOUT, binary, farm, farm_with_env, json, run_bounded};
use farm_tests::reference;

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn bad_counts_are_refused_naming_the_flag_and_the_value() {
    let bad = [
        "1.5",
        "-5",
        "1e999",
        "abc",
        "inf",
        "NaN",
        "",
        "0x10",
        "1e9abc",
        "18446744073709551616",
    ];
    for flag in ["--n", "--start"] {
        for value in bad {
            let mut args = vec!["submit", "sqrt", "--n", "10"];
            if flag == "--n" {
                args.truncate(2);
            }
            let assignment = format!("{flag}={value}");
            args.push(&assignment);
            let out = farm(&args);
            let message = stderr(&out);
            assert_eq!(out.status.code(), Some(2), "{flag} {value:?}: {message}");
            assert!(
                message.contains(&format!("invalid value '{value}' for '{flag} <")),
                "{flag} {value:?}: {message}"
            );
            assert!(!message.contains("panicked"), "{message}");
        }
    }
}

#[test]
fn a_separate_negative_value_is_explained_too() {
    let out = farm(&["submit", "sqrt", "--n", "-5"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("invalid value '-5' for '--n <N>': negative numbers are not allowed")
    );
}

#[test]
fn counts_are_read_exactly() {
    // 2^53 + 1 is not a float; it must arrive intact.
    let out = farm(&[
        "submit",
        "sqrt",
        "--n",
        "3",
        "--start",
        "9007199254740993",
        "--json",
    ]);
    let value = json(&out);
    assert_eq!(value["start"].as_u64(), Some(9_007_199_254_740_993));
    let expected = reference::summary(Function::Sqrt, 9_007_199_254_740_993, 3);
    assert_eq!(
        value["digest"].as_str(),
        Some(expected.digest.to_string().as_str())
    );

    for (text, n) in [
        ("1e3", 1000),
        ("1_000", 1000),
        ("2.5e3", 2500),
        ("1.2345e4", 12345),
    ] {
        let out = farm(&["submit", "sqrt", "--n", text, "--json"]);
        assert_eq!(json(&out)["n"].as_u64(), Some(n), "--n {text}");
    }
    let out = farm(&["submit", "sqrt", "--n", "1", "--start", "2.5e9", "--json"]);
    assert_eq!(json(&out)["start"].as_u64(), Some(2_500_000_000));
}

#[test]
fn an_unknown_function_lists_the_known_ones() {
    let out = farm(&["submit", "cbrt", "--n", "10"]);
    assert_eq!(out.status.code(), Some(2));
    let message = stderr(&out);
    assert!(
        message.contains(
            "invalid value 'cbrt' for '<FUNCTION|MODULE>': not a catalog function (known: sqrt) nor a module path (./f.wasm, f.wat)"
        ),
        "{message}"
    );
}

#[test]
fn other_bad_input_exits_2() {
    let cases: [(&[&str], &str); 9] = [
        (
            &[
                "submit",
                "sqrt",
                "--n",
                "10",
                "--start",
                "18446744073709551615",
            ],
            "--start 18446744073709551615 with --n 10 runs past the largest index",
        ),
        (
            &["submit", "sqrt", "--n", "10", "--output", "out.parquet"],
            "cannot tell the format of out.parquet from its extension: \
             supported extensions are .npy, .bin, .csv, .txt; \
             or name the format with --format npy, bin or text",
        ),
        (
            &["submit", "sqrt", "--n", "10", "--format", "bin"],
            "the following required arguments were not provided:\n  --output <OUTPUT>",
        ),
        (
            &[
                "submit", "sqrt", "--n", "10", "--output", "-", "--format", "csv",
            ],
            "invalid value 'csv' for '--format <FORMAT>'",
        ),
        (
            &["submit", "sqrt", "--n", "10", "--fsync"],
            "the following required arguments were not provided:\n  --output <OUTPUT>",
        ),
        (
            &["submit", "sqrt", "--n", "10", "--output", "-", "--fsync"],
            "--fsync needs --output FILE: stdout (-) cannot be synced to disk",
        ),
        (
            &["submit", "sqrt", "--n", "10", "--chunk-size", "0"],
            "a chunk holds at least one element",
        ),
        (
            &["submit", "sqrt", "--n", "10", "--coordinator", "nowhere"],
            "invalid coordinator address 'nowhere'",
        ),
        (&["submit", "sqrt"], "--n <N>"),
    ];
    for (args, expected) in cases {
        let out = farm(args);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", stderr(&out));
        assert!(
            stderr(&out).contains(expected),
            "{args:?}: {}",
            stderr(&out)
        );
    }
}

#[test]
fn addresses_that_cannot_be_used_as_given_exit_2() {
    let tls = "invalid coordinator address 'https://127.0.0.1:50051': TLS (https://) is not \
               supported yet; give HOST:PORT or http://HOST:PORT";
    let zero = "invalid coordinator address '127.0.0.1:0': port 0 is not a port anything \
                listens on; give the coordinator's port";
    let empty = "invalid value '' for '--coordinator <HOST:PORT>': the coordinator address is \
                 empty: give HOST:PORT, or (for farm submit) leave out --coordinator and \
                 FARM_COORDINATOR to run embedded";
    let submit = ["submit", "sqrt", "--n", "10", "--coordinator"];
    let cases: [(Vec<&str>, &str); 6] = [
        ([&submit[..], &["https://127.0.0.1:50051"]].concat(), tls),
        (
            vec!["workers", "--coordinator", "https://127.0.0.1:50051"],
            tls,
        ),
        ([&submit[..], &["127.0.0.1:0"]].concat(), zero),
        (vec!["health", "--coordinator", "127.0.0.1:0"], zero),
        ([&submit[..], &[""]].concat(), empty),
        (vec!["status", "1", "--coordinator", ""], empty),
    ];
    for (args, expected) in cases {
        let out = farm(&args);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", stderr(&out));
        assert!(
            stderr(&out).contains(expected),
            "{args:?}: {}",
            stderr(&out)
        );
    }
}

#[test]
fn an_empty_farm_coordinator_is_refused_not_taken_as_embedded() {
    let out = farm_with_env(
        &["submit", "sqrt", "--n", "10"],
        &[("FARM_COORDINATOR", "")],
    );
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("the coordinator address is empty"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn threads_past_what_a_worker_may_claim_are_refused() {
    let out = farm(&["submit", "sqrt", "--n", "10", "--threads", "5000"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out)
            .contains("invalid value '5000' for '--threads <THREADS>': 5000 is not in 1..=4096"),
        "{}",
        stderr(&out)
    );
    let out = farm(&["submit", "sqrt", "--n", "10", "--threads", "3", "--json"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    // The worker too, before it starts 5000 threads (a minute on a small
    // machine) only to be refused by the coordinator.
    let mut worker = Command::new(binary("farm-worker"));
    worker.args(["--connect", "127.0.0.1:9", "--threads", "5000"]);
    let out = run_bounded(worker, PROCESS_TIMEOUT).expect("start farm-worker");
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out)
            .contains("invalid value '5000' for '--threads <THREADS>': 5000 is not in 1..=4096"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn the_coordinator_refuses_what_the_cli_cannot_check() {
    // Larger than the coordinator's documented cap of 10^13 elements.
    let out = farm(&["submit", "sqrt", "--n", "1e14", "--chunk-size", "4096"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains(
            "n = 100000000000000 is over this coordinator's limit of 10000000000000 elements"
        ),
        "{}",
        stderr(&out)
    );
}

#[test]
fn farm_digest_recomputes_the_summary_of_every_format() {
    let dir = tempfile::tempdir().unwrap();
    let submitted = json(&farm(&[
        "submit", "sqrt", "--n", "50000", "--start", "9", "--json",
    ]));
    for extension in ["npy", "bin", "csv", "txt"] {
        let file = dir.path().join(format!("out.{extension}"));
        let file = file.to_str().unwrap();
        let written = json(&farm(&[
            "submit", "sqrt", "--n", "50000", "--start", "9", "--output", file, "--json",
        ]));
        let recomputed = json(&farm(&["digest", file, "--json"]));
        for key in ["n", "sum", "min", "max", "digest"] {
            assert_eq!(recomputed[key], submitted[key], "{extension}: {key}");
            assert_eq!(written[key], submitted[key], "{extension}: {key}");
        }
    }
}

#[test]
fn format_overrides_the_extension_for_submit_and_digest() {
    let dir = tempfile::tempdir().unwrap();
    let expected = reference::summary(Function::Sqrt, 9, 50_000);
    let expected_bytes = reference::bytes(Function::Sqrt, 9, 50_000);
    let cases = [
        ("values.dat", "npy"),
        ("values.txt", "bin"),
        ("no-extension", "text"),
    ];
    for (name, format) in cases {
        let file = dir.path().join(name);
        let file = file.to_str().unwrap();
        let written = json(&farm(&[
            "submit", "sqrt", "--n", "50000", "--start", "9", "--output", file, "--format", format,
            "--json",
        ]));
        farm_tests::process::assert_summary_json(&written, &expected);
        let bytes = std::fs::read(file).unwrap();
        match format {
            "npy" => {
                assert!(bytes.starts_with(b"\x93NUMPY"), "{name}");
                assert!(bytes.ends_with(&expected_bytes), "{name}");
            }
            "bin" => assert!(bytes == expected_bytes, "{name}"),
            _ => assert_eq!(bytes.iter().filter(|&&b| b == b'\n').count(), 50_000),
        }
        let recomputed = json(&farm(&["digest", file, "--format", format, "--json"]));
        farm_tests::process::assert_summary_json(&recomputed, &expected);
    }
    // Without --format, digest goes by the extension, and says so.
    let out = farm(&["digest", dir.path().join("values.dat").to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("--format"), "{}", stderr(&out));
}

/// `--fsync` writes the same file, and more than one stretch of it is
/// written back on the way (40 MB, the stretch is 32 MiB).
#[test]
fn an_fsynced_output_is_the_same_file() {
    let dir = tempfile::tempdir().unwrap();
    let (start, n) = (7, 5_000_003);
    let expected_bytes = reference::bytes(Function::Sqrt, start, n);
    for name in ["out.bin", "out.npy"] {
        let file = dir.path().join(name);
        let file = file.to_str().unwrap();
        let written = json(&farm(&[
            "submit", "sqrt", "--n", "5000003", "--start", "7", "--output", file, "--fsync",
            "--json",
        ]));
        farm_tests::process::assert_summary_json(
            &written,
            &reference::summary(Function::Sqrt, start, n),
        );
        let bytes = std::fs::read(file).unwrap();
        assert!(bytes.ends_with(&expected_bytes), "{name}");
        let header = if name.ends_with(".npy") { 128 } else { 0 };
        assert_eq!(bytes.len(), header + expected_bytes.len(), "{name}");
    }
    let mut names: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|entry| entry.unwrap().file_name())
        .collect();
    names.sort();
    assert_eq!(names, ["out.bin", "out.npy"], "no partial file is left");
}

#[test]
fn values_on_stdout_keep_the_summary_on_stderr() {
    let out = farm(&["submit", "sqrt", "--n", "5", "--output", "-"]);
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "0.0\n1.0\n1.4142135623730951\n1.7320508075688772\n2.0\n"
    );
    assert!(stderr(&out).contains("digest"));

    let out = farm(&[
        "submit", "sqrt", "--n", "5", "--output", "-", "--format", "bin",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(out.stdout == reference::bytes(Function::Sqrt, 0, 5));
}

#[test]
fn a_reader_that_stops_early_is_not_an_error() {
    // `farm submit ... --output - | head -1`: the pipe closes mid-job.
    use std::io::{BufRead, BufReader};
    use std::process::Stdio;
    let mut child = Command::new(binary("farm"))
        .args(["submit", "sqrt", "--n", "1e7", "--output", "-"])
        .env_remove("FARM_COORDINATOR")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start farm");
    let mut first = String::new();
    {
        let mut stdout = BufReader::new(child.stdout.take().expect("piped stdout"));
        stdout.read_line(&mut first).expect("read a line");
    }
    assert_eq!(first, "0.0\n");
    let out = child.wait_with_output().expect("farm exits");
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(!stderr(&out).contains("error"), "{}", stderr(&out));
}
