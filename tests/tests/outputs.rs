//! `--output` never destroys what farm does not own: a FIFO or device is
//! written in place, a symbolic link is followed, and `--no-clobber` keeps
//! an existing file. Each case runs the real `farm` and checks the exit
//! code, the message and what is left on disk.
#![cfg(unix)]

use std::fs;
use std::io::Read;
use std::os::unix::fs::{FileTypeExt, MetadataExt, symlink};
use std::path::Path;
use std::process::Command;

use farm_catalog::Function;
use farm_catalog::summary::summarize_values;
use farm_tests::process::{
    PROCESS_TIMEOUT, Process, assert_summary_json, farm, json, start_coordinator, start_worker,
    wait_for_workers,
};
use farm_tests::reference;

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

/// Little-endian f64 bytes as values.
fn values_of(bytes: &[u8]) -> Vec<f64> {
    bytes
        .chunks_exact(8)
        .map(|b| f64::from_le_bytes(b.try_into().expect("8 bytes")))
        .collect()
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

/// A coordinator and one worker on loopback: a job's raw values then come
/// on a value connection, which farm splices into its output.
struct Cluster {
    _coordinator: Process,
    _worker: Process,
    address: String,
}

fn cluster() -> Cluster {
    let (coordinator, address) = start_coordinator(&[]);
    let worker = start_worker(address, &["--threads", "1"]);
    let address = address.to_string();
    wait_for_workers(&address, 1, PROCESS_TIMEOUT);
    Cluster {
        _coordinator: coordinator,
        _worker: worker,
        address,
    }
}

/// Big enough for several chunks, and past the local short cut.
const CLUSTER_N: u64 = 300_001;

/// `farm submit sqrt --n CLUSTER_N --format bin --output OUTPUT --json` on
/// `cluster`.
fn submit_bin_on(cluster: &Cluster, output: &Path, extra: &[&str]) -> std::process::Output {
    let n = CLUSTER_N.to_string();
    let mut args = vec![
        "submit",
        "sqrt",
        "--n",
        &n,
        "--coordinator",
        &cluster.address,
        "--format",
        "bin",
        "--output",
        path_str(output),
        "--json",
    ];
    args.extend_from_slice(extra);
    farm(&args)
}

/// A FIFO at `path` and a thread that reads it to the end.
fn fifo_with_reader(path: &Path) -> std::thread::JoinHandle<Vec<u8>> {
    let made = Command::new("mkfifo")
        .arg(path)
        .status()
        .expect("run mkfifo");
    assert!(made.success());
    let path = path.to_path_buf();
    std::thread::spawn(move || {
        let mut bytes = Vec::new();
        fs::File::open(&path)
            .and_then(|mut file| file.read_to_end(&mut bytes))
            .expect("read the fifo");
        bytes
    })
}

/// Lets a FIFO's reader finish if farm never opened the FIFO (it failed
/// first): opening the write end and closing it is an end of file. When
/// farm did write, there is no reader waiting and this does nothing.
fn release(fifo: &Path) {
    use std::os::unix::fs::OpenOptionsExt;
    let _ = fs::OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(fifo);
}

/// Makes a character device node at `path`, as `mknod path c MAJOR MINOR`.
/// This needs root (or CAP_MKNOD), as CI has: without it the test fails,
/// saying so, rather than passing without having checked anything.
fn mknod_char(path: &Path, major: u32, minor: u32) {
    let out = Command::new("mknod")
        .args([path_str(path), "c", &major.to_string(), &minor.to_string()])
        .output()
        .expect("run mknod");
    assert!(
        out.status.success(),
        "cannot test writing to a device: `mknod {} c {major} {minor}` was refused ({}): \
         run this test as root or with CAP_MKNOD, as CI does",
        path.display(),
        String::from_utf8_lossy(&out.stderr).trim()
    );
}

/// The device number of the node at `path`.
fn rdev(path: &Path) -> u64 {
    let meta = fs::symlink_metadata(path).expect("device");
    assert!(meta.file_type().is_char_device(), "{meta:?}");
    meta.rdev()
}

#[test]
fn a_fifo_is_written_in_place_and_its_reader_gets_every_value() {
    let dir = tempfile::tempdir().expect("temp dir");
    let expected = reference_bin(dir.path());
    let fifo = dir.path().join("values.fifo");
    let reader = fifo_with_reader(&fifo);
    let out = submit_bin(&fifo, &[]);
    release(&fifo);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let got = reader.join().expect("reader thread");
    assert!(got == expected, "the reader got {} bytes", got.len());
    assert!(fs::metadata(&fifo).expect("fifo").file_type().is_fifo());
    assert_eq!(names_in(dir.path()), ["values.fifo"]);
}

#[test]
fn a_fifo_gets_a_clusters_values_spliced_and_the_digest_is_theirs() {
    let cluster = cluster();
    let dir = tempfile::tempdir().expect("temp dir");
    let fifo = dir.path().join("values.fifo");
    let reader = fifo_with_reader(&fifo);
    let out = submit_bin_on(&cluster, &fifo, &[]);
    release(&fifo);
    let got = reader.join().expect("reader thread");
    let printed = json(&out);
    let expected = reference::bytes(Function::Sqrt, 0, CLUSTER_N);
    assert!(got == expected, "the reader got {} bytes", got.len());
    // The digest printed is the digest of what the reader got.
    let read = summarize_values(&values_of(&got));
    assert_summary_json(&printed, &read);
    assert_summary_json(&printed, &reference::summary(Function::Sqrt, 0, CLUSTER_N));
    assert!(fs::metadata(&fifo).expect("fifo").file_type().is_fifo());
    assert_eq!(names_in(dir.path()), ["values.fifo"]);
}

#[test]
fn a_character_device_is_written_in_place_never_replaced() {
    let cluster = cluster();
    let dir = tempfile::tempdir().expect("temp dir");
    // A node of /dev/null's device (1, 3).
    let null = dir.path().join("null");
    mknod_char(&null, 1, 3);
    let before = rdev(&null);
    let expected = reference::summary(Function::Sqrt, 0, CLUSTER_N);
    for out in [
        submit_bin(&null, &["--no-clobber"]),
        submit_bin_on(&cluster, &null, &["--no-clobber"]),
        submit_bin_on(&cluster, &null, &[]),
    ] {
        assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
        assert_eq!(rdev(&null), before);
        assert_eq!(names_in(dir.path()), ["null"]);
    }
    assert_summary_json(&json(&submit_bin_on(&cluster, &null, &[])), &expected);
}

/// A device that refuses the write says why, as the kernel does, and is
/// left as it was. /dev/full refuses `splice`, which farm uses for a
/// cluster's values, with "invalid argument": farm writes a device as a
/// program writes it, so the error is the device's own.
#[test]
fn a_full_device_fails_the_job_with_its_own_error() {
    let cluster = cluster();
    let dir = tempfile::tempdir().expect("temp dir");
    // A node of /dev/full's device (1, 7).
    let full = dir.path().join("full");
    mknod_char(&full, 1, 7);
    let before = rdev(&full);
    for out in [submit_bin(&full, &[]), submit_bin_on(&cluster, &full, &[])] {
        assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
        assert_eq!(
            stderr(&out),
            format!(
                "farm: cannot write {}: No space left on device (os error 28)\n",
                full.display()
            )
        );
        assert_eq!(rdev(&full), before);
        assert_eq!(names_in(dir.path()), ["full"]);
    }
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
