//! The install tree (`buildout/`, or wherever it was copied): this binary is `<root>/bin/passenger`.

use std::path::{Path, PathBuf};

/// The install root, checked to hold the bundled nginx.
pub fn root() -> Result<PathBuf, String> {
    let exe =
        std::env::current_exe().map_err(|e| format!("cannot find this program's path: {e}"))?;
    let root = exe.parent().and_then(Path::parent).map(Path::to_path_buf);
    match root {
        Some(r) if r.join("webhelper/nginx").is_file() => Ok(r),
        _ => Err(format!(
            "{} is not inside an install tree (expected ../webhelper/nginx beside it); run scripts/build and use buildout/bin/passenger",
            exe.display()
        )),
    }
}
