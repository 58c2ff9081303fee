//! The directory under which every app process gets its private socket directory:
//! `<instance>/apps.s`, unless that path is too long for a unix socket address once a
//! process's directory and socket name are added (108 bytes on Linux; a long
//! `passenger_instance_registry_dir` or `$TMPDIR` gets there). Then it is a short directory
//! under /tmp, named in the instance directory so that it is removed with it.

use passenger_protocol::instance::{
    APPS_DIR, SHORT_APPS_DIR_NOTE, SHORT_APPS_DIR_PREFIX, remove_short_apps_dir,
};
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

/// The longest socket path the kernel takes (`sun_path` is 108 bytes with its NUL).
const MAX_SOCKET_PATH: usize = 107;
/// The longest a process's part can be: `/p.XXXXXXXX/preloader.<16 hex>`.
const LONGEST_PROCESS_PART: usize = 40;

pub struct SocketDir {
    pub path: PathBuf,
    /// The short directory to remove at shutdown (None: it is inside the instance).
    short: Option<PathBuf>,
    instance_dir: PathBuf,
}

impl SocketDir {
    /// Creates the directory (traversable by every app user: each reaches only its own
    /// private directory inside).
    pub fn create(instance_dir: &Path) -> Result<SocketDir, String> {
        // A core of this instance that crashed may have left a short directory behind.
        remove_short_apps_dir(instance_dir);
        let regular = instance_dir.join(APPS_DIR);
        make_dir(&regular, false)?;
        let mut dir = SocketDir {
            path: regular.clone(),
            short: None,
            instance_dir: instance_dir.to_path_buf(),
        };
        if fits(&regular) {
            return Ok(dir);
        }
        let mut last_error = String::new();
        for _ in 0..16 {
            let short = PathBuf::from(format!(
                "{SHORT_APPS_DIR_PREFIX}{}",
                &crate::spawner::random_password()[..8]
            ));
            match make_dir(&short, true) {
                Ok(()) => {
                    std::fs::write(
                        instance_dir.join(SHORT_APPS_DIR_NOTE),
                        short.to_string_lossy().as_bytes(),
                    )
                    .map_err(|e| format!("cannot write {SHORT_APPS_DIR_NOTE}: {e}"))?;
                    tracing::info!(
                        "App sockets go to {} ({} is too long a path for unix sockets)",
                        short.display(),
                        regular.display()
                    );
                    dir.path = short.clone();
                    dir.short = Some(short);
                    return Ok(dir);
                }
                Err(e) => last_error = e,
            }
        }
        Err(last_error)
    }

    /// Removes the short directory, if one was made.
    pub fn remove_short(&self) {
        if self.short.is_some() {
            remove_short_apps_dir(&self.instance_dir);
        }
    }
}

fn fits(dir: &Path) -> bool {
    dir.as_os_str().len() + LONGEST_PROCESS_PART <= MAX_SOCKET_PATH
}

/// Creates `path` (mode 0711); `fresh`: it must not exist yet (a name of our own choosing in
/// /tmp), else an existing one is fine (a core of this instance before this one made it).
fn make_dir(path: &Path, fresh: bool) -> Result<(), String> {
    std::fs::DirBuilder::new()
        .recursive(!fresh)
        .mode(0o711)
        .create(path)
        .map_err(|e| {
            format!(
                "cannot create the app socket directory {}: {e}; check the permissions of its \
                 parent",
                path.display()
            )
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_long_instance_path_gets_a_short_socket_dir_that_is_removed() {
        let base = std::env::temp_dir().join(format!(
            "socket-dir-test-{}-{}",
            std::process::id(),
            "x".repeat(60)
        ));
        std::fs::create_dir_all(&base).unwrap();
        let dir = SocketDir::create(&base).unwrap();
        assert!(
            dir.path
                .to_string_lossy()
                .starts_with(SHORT_APPS_DIR_PREFIX),
            "{}",
            dir.path.display()
        );
        assert!(dir.path.is_dir());
        assert!(fits(&dir.path));
        let note = std::fs::read_to_string(base.join(SHORT_APPS_DIR_NOTE)).unwrap();
        assert_eq!(Path::new(&note), dir.path);
        dir.remove_short();
        assert!(!dir.path.exists());
        assert!(!base.join(SHORT_APPS_DIR_NOTE).exists());
        std::fs::remove_dir_all(&base).unwrap();
    }

    #[test]
    fn a_short_instance_path_keeps_its_own() {
        let base = PathBuf::from(format!("/tmp/sdt-{}", std::process::id()));
        std::fs::create_dir_all(&base).unwrap();
        let dir = SocketDir::create(&base).unwrap();
        assert_eq!(dir.path, base.join(APPS_DIR));
        assert!(!base.join(SHORT_APPS_DIR_NOTE).exists());
        std::fs::remove_dir_all(&base).unwrap();
    }
}
