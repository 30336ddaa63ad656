//! `--output` never destroys what farm does not own: a FIFO or device is
//! written in place, a symbolic link is followed, and `--no-clobber` keeps
//! an existing file. Each case runs the real `farm` and checks the exit
//! code, the message and what is left on disk.
#![cfg(unix)]

use std::fs;
use std::io::Read;
use std::os::unix::fs::{FileTypeExt, symlink};
use std::path::Path;
use std::process::Command;

use farm_tests::process::farm;

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn names_in(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .expect("read dir")
        .map(|e| {
            e.expect("dir entry")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    names.sort();
    names
}

/// The bytes `farm` writes for sqrt over 0..1000 as raw f64, via a plain
/// new file.
fn reference_bin(dir: &Path) -> Vec<u8> {
    let path = dir.join("reference.bin");
    let out = farm(&["submit", "sqrt", "--n", "1000", "--output", path_str(&path)]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let bytes = fs::read(&path).expect("read reference");
    fs::remove_file(&path).expect("remove reference");
    assert_eq!(bytes.len(), 8000);
    bytes
}

fn path_str(path: &Path) -> &str {
    path.to_str().expect("utf-8 temp path")
}

fn submit_bin(output: &Path, extra: &[&str]) -> std::process::Output {
    let mut args = vec![
        "submit",
        "sqrt",
        "--n",
        "1000",
        "--format",
        "bin",
        "--output",
        path_str(output),
    ];
    args.extend_from_slice(extra);
    farm(&args)
}

#[test]
fn a_fifo_is_written_in_place_and_its_reader_gets_every_value() {
    let dir = tempfile::tempdir().expect("temp dir");
    let expected = reference_bin(dir.path());
    let fifo = dir.path().join("values.fifo");
    let made = Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .expect("run mkfifo");
    assert!(made.success());
    let reader = {
        let fifo = fifo.clone();
        std::thread::spawn(move || {
            let mut bytes = Vec::new();
            fs::File::open(&fifo)
                .and_then(|mut file| file.read_to_end(&mut bytes))
                .expect("read the fifo");
            bytes
        })
    };
    let out = submit_bin(&fifo, &[]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let got = reader.join().expect("reader thread");
    assert!(got == expected, "the reader got {} bytes", got.len());
    assert!(fs::metadata(&fifo).expect("fifo").file_type().is_fifo());
    assert_eq!(names_in(dir.path()), ["values.fifo"]);
}

#[test]
fn a_character_device_is_written_in_place_never_replaced() {
    let dir = tempfile::tempdir().expect("temp dir");
    let null = dir.path().join("null");
    // A copy of /dev/null: making one needs root (or CAP_MKNOD).
    let made = Command::new("mknod")
        .args([path_str(&null), "c", "1", "3"])
        .status()
        .expect("run mknod");
    if !made.success() {
        eprintln!("skipped: mknod needs root");
        return;
    }
    let out = submit_bin(&null, &["--no-clobber"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let meta = fs::symlink_metadata(&null).expect("device");
    assert!(meta.file_type().is_char_device(), "{meta:?}");
    assert_eq!(names_in(dir.path()), ["null"]);
}

#[test]
fn a_symlink_is_followed_and_stays_a_link() {
    let dir = tempfile::tempdir().expect("temp dir");
    let expected = reference_bin(dir.path());
    let real = dir.path().join("real");
    fs::create_dir(&real).expect("mkdir");
    fs::write(real.join("out.bin"), b"old").expect("write old");
    let link = dir.path().join("link.bin");
    symlink("real/out.bin", &link).expect("symlink");
    let out = submit_bin(&link, &[]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(
        fs::symlink_metadata(&link)
            .expect("link")
            .file_type()
            .is_symlink()
    );
    assert!(fs::read(real.join("out.bin")).expect("read target") == expected);
    assert_eq!(names_in(&real), ["out.bin"]);
}

#[test]
fn no_clobber_keeps_an_existing_file_and_writes_a_new_one() {
    let dir = tempfile::tempdir().expect("temp dir");
    let expected = reference_bin(dir.path());
    let path = dir.path().join("out.bin");
    fs::write(&path, b"old").expect("write old");
    let out = submit_bin(&path, &["--no-clobber"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert_eq!(
        stderr(&out),
        format!(
            "farm: {} exists, and --no-clobber keeps it: remove it or name another file\n",
            path.display()
        )
    );
    assert_eq!(fs::read(&path).expect("read old"), b"old");
    // Through a link, the file it points to is what is kept.
    let link = dir.path().join("link.bin");
    symlink("out.bin", &link).expect("symlink");
    let out = submit_bin(&link, &["--no-clobber"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert_eq!(fs::read(&path).expect("read old"), b"old");

    fs::remove_file(&path).expect("remove old");
    let out = submit_bin(&path, &["--no-clobber"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(fs::read(&path).expect("read new") == expected);
    assert_eq!(names_in(dir.path()), ["link.bin", "out.bin"]);
}

#[test]
fn a_directory_is_refused_before_the_job_runs() {
    let dir = tempfile::tempdir().expect("temp dir");
    let out = submit_bin(dir.path(), &[]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert_eq!(
        stderr(&out),
        format!(
            "farm: {} is a directory, not a file\n",
            dir.path().display()
        )
    );
}
