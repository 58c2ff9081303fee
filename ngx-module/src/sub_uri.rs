//! Sub-URI apps (`passenger_base_uri`): which base URI a request is under, and where that app's
//! document root and app root are.
//!
//! As in Passenger: under `root /site/public; passenger_base_uri /blog;` the blog's document
//! root is `/site/public/blog`, usually a symlink to `/apps/blog/public`, and its app root is
//! the parent of the symlink's target (`/apps/blog`). With `alias` the location's mapped root
//! already is the app's document root; `passenger_document_root` and `passenger_app_root`
//! override either.

use std::path::{Path, PathBuf};

/// The longest of `base_uris` (given longest first) that `uri` is under, on a segment
/// boundary: `/blog` matches `/blog` and `/blog/x`, not `/blogs`.
pub fn matching_base_uri<'a>(base_uris: &[&'a [u8]], uri: &[u8]) -> Option<&'a [u8]> {
    base_uris
        .iter()
        .copied()
        .find(|base| uri.starts_with(base) && (uri.len() == base.len() || uri[base.len()] == b'/'))
}

/// The document root the app is told about (`DOCUMENT_ROOT`).
pub fn document_root(
    configured: &[u8],
    mapped_root: &[u8],
    base_uri: Option<&[u8]>,
    aliased: bool,
) -> Vec<u8> {
    match base_uri {
        _ if !configured.is_empty() => configured.to_vec(),
        Some(base) if !aliased => [mapped_root, base].concat(),
        _ => mapped_root.to_vec(),
    }
}

/// The app root when `passenger_app_root` is not set: the parent of the document root, through
/// a symlink for a sub-URI app.
pub fn app_root_of(document_root: &Path, base_uri: Option<&[u8]>) -> Option<PathBuf> {
    let resolved = match base_uri {
        Some(_) => std::fs::canonicalize(document_root).unwrap_or(document_root.to_path_buf()),
        None => document_root.to_path_buf(),
    };
    resolved.parent().map(Path::to_path_buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base_uris_match_on_segment_boundaries() {
        let bases: [&[u8]; 2] = [b"/blog/admin", b"/blog"];
        assert_eq!(matching_base_uri(&bases, b"/blog"), Some(&b"/blog"[..]));
        assert_eq!(matching_base_uri(&bases, b"/blog/x"), Some(&b"/blog"[..]));
        assert_eq!(
            matching_base_uri(&bases, b"/blog/admin/y"),
            Some(&b"/blog/admin"[..])
        );
        assert_eq!(matching_base_uri(&bases, b"/blogs"), None);
        assert_eq!(matching_base_uri(&bases, b"/"), None);
    }

    #[test]
    fn document_roots() {
        assert_eq!(
            document_root(b"", b"/s/public", Some(b"/b"), false),
            b"/s/public/b"
        );
        assert_eq!(
            document_root(b"", b"/a/public", Some(b"/b"), true),
            b"/a/public"
        );
        assert_eq!(
            document_root(b"/x/public", b"/s/public", Some(b"/b"), false),
            b"/x/public"
        );
        assert_eq!(document_root(b"", b"/s/public", None, false), b"/s/public");
    }
}
