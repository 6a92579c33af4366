//! Compiles every `ebpf/*.bpf.c` of the workspace with Debian's clang into `$OUT_DIR/<name>.o`
//! (`drop.bpf.c` -> `drop.bpf.o`), which the agent embeds with `include_bytes_aligned!`.

use std::env;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{exit, Command};

const INSTALL: &str = "apt-get install clang llvm libbpf-dev";

fn fail(msg: &str) -> ! {
    eprintln!("error: building Faultline's eBPF programs: {msg}");
    exit(1);
}

/// Debian's multiarch directory and clang's `__TARGET_ARCH_*` name for the target architecture.
fn arch() -> (String, &'static str) {
    let arch = env::var("CARGO_CFG_TARGET_ARCH").unwrap_or_else(|_| "x86_64".into());
    match arch.as_str() {
        "x86_64" => ("x86_64-linux-gnu".into(), "x86"),
        "aarch64" => ("aarch64-linux-gnu".into(), "arm64"),
        "riscv64" => ("riscv64-linux-gnu".into(), "riscv"),
        "s390x" => ("s390x-linux-gnu".into(), "s390"),
        "powerpc64" => ("powerpc64le-linux-gnu".into(), "powerpc"),
        other => fail(&format!(
            "unsupported target architecture {other}; supported: x86_64, aarch64, riscv64, s390x, powerpc64"
        )),
    }
}

fn main() {
    let manifest = PathBuf::from(env::var("CARGO_MANIFEST_DIR").unwrap_or_else(|_| ".".into()));
    let src_dir = manifest.join("..").join("ebpf");
    let out_dir = PathBuf::from(env::var("OUT_DIR").unwrap_or_else(|_| fail("OUT_DIR is not set")));
    let clang = env::var("CLANG").unwrap_or_else(|_| "clang".into());
    println!("cargo:rerun-if-env-changed=CLANG");
    println!("cargo:rerun-if-changed={}", src_dir.display());

    let (multiarch, target_arch) = arch();
    let include = Path::new("/usr/include").join(&multiarch);
    for (header, what) in [
        (
            include.join("asm").join("types.h"),
            "the kernel's asm headers",
        ),
        (
            PathBuf::from("/usr/include/bpf/bpf_helpers.h"),
            "libbpf's bpf_helpers.h",
        ),
        (PathBuf::from("/usr/include/linux/bpf.h"), "linux/bpf.h"),
    ] {
        if !header.exists() {
            fail(&format!(
                "{} ({what}) is missing; install it with `{INSTALL} linux-libc-dev`",
                header.display()
            ));
        }
    }

    let mut sources: Vec<PathBuf> = fs::read_dir(&src_dir)
        .unwrap_or_else(|e| fail(&format!("cannot read {}: {e}", src_dir.display())))
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.ends_with(".bpf.c") || n.ends_with(".h"))
        })
        .collect();
    sources.sort();
    for path in &sources {
        println!("cargo:rerun-if-changed={}", path.display());
    }

    for src in sources
        .iter()
        .filter(|p| p.to_string_lossy().ends_with(".bpf.c"))
    {
        let name = src
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_suffix(".c"))
            .unwrap_or_else(|| fail(&format!("odd file name {}", src.display())));
        let out = out_dir.join(format!("{name}.o"));
        let result = Command::new(&clang)
            .args(["-target", "bpf", "-O2", "-g", "-Wall", "-Werror"])
            .arg(format!("-D__TARGET_ARCH_{target_arch}"))
            .arg(format!("-I{}", include.display()))
            .arg(format!("-I{}", src_dir.display()))
            .arg("-c")
            .arg(src)
            .arg("-o")
            .arg(&out)
            .output();
        match result {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => fail(&format!(
                "`{clang}` was not found; install it with `{INSTALL}` (or set CLANG to a clang that targets bpf)"
            )),
            Err(e) => fail(&format!("cannot run `{clang}`: {e}")),
            Ok(o) if !o.status.success() => fail(&format!(
                "`{clang}` failed on {} ({}):\n{}",
                src.display(),
                o.status,
                String::from_utf8_lossy(&o.stderr)
            )),
            Ok(_) => {}
        }
    }
}
