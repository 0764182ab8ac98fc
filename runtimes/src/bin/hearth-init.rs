//! `hearth-init PROGRAM [ARGS...]`: the first process of an environment whose function speaks
//! Lambda's Runtime API. See [`hearth_runtime::init`].
#![forbid(unsafe_code)]

fn main() {
    let mut args = std::env::args_os().skip(1);
    if args.len() == 2 && args.next().is_some_and(|a| a == "--install") {
        // `hearth-init --install DIR`: writes the managed runtimes' bootstraps under DIR.
        let dir = std::path::PathBuf::from(args.next().unwrap_or_default());
        if let Err(e) = hearth_runtime::init::install_runtime_files(&dir) {
            eprintln!(
                "hearth-init: installing runtime files in {}: {e}",
                dir.display()
            );
            std::process::exit(1);
        }
        return;
    }
    let argv: Vec<std::ffi::OsString> = std::env::args_os().skip(1).collect();
    hearth_runtime::init::run(argv)
}
