//! Sub-URI apps (`passenger_base_uri`): which base URI a request is under, and where that app's
//! document root and app root are.
//!
//! As in Passenger: under `root /site/public; passenger_base_uri /blog;` the blog's document
//! root is `/site/public/blog`, usually a symlink to `/apps/blog/public`, and its app root is
//! the parent of the symlink's target (`/apps/blog`). With `alias` the location's mapped root
//! already is the app's document root; `passenger_document_root` and `passenger_app_root`
//! override either.

use std::borrow::Cow;
use std::path::Path;

/// The longest of `base_uris` (given longest first) that `uri` is under, on a segment
/// boundary: `/blog` matches `/blog` and `/blog/x`, not `/blogs`.
pub fn matching_base_uri<'a>(base_uris: &[&'a [u8]], uri: &[u8]) -> Option<&'a [u8]> {
    base_uris
        .iter()
        .copied()
        .find(|base| uri.starts_with(base) && (uri.len() == base.len() || uri[base.len()] == b'/'))
}

/// The document root the app is told about (`DOCUMENT_ROOT`); borrowed but under a base URI
/// (this runs for every request).
pub fn document_root<'a>(
    configured: &'a [u8],
    mapped_root: &'a [u8],
    base_uri: Option<&[u8]>,
    aliased: bool,
) -> Cow<'a, [u8]> {
    match base_uri {
        _ if !configured.is_empty() => Cow::Borrowed(configured),
        Some(base) if !aliased => Cow::Owned([mapped_root, base].concat()),
        _ => Cow::Borrowed(mapped_root),
    }
}

/// The app root when `passenger_app_root` is not set: the parent of the document root, through
/// a symlink for a sub-URI app (borrowed from `document_root` otherwise).
pub fn app_root_of<'a>(document_root: &'a Path, base_uri: Option<&[u8]>) -> Option<Cow<'a, Path>> {
    match base_uri {
        Some(_) => {
            let resolved =
                std::fs::canonicalize(document_root).unwrap_or(document_root.to_path_buf());
            resolved.parent().map(|p| Cow::Owned(p.to_path_buf()))
        }
        None => document_root.parent().map(Cow::Borrowed),
    }
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
            &*document_root(b"", b"/s/public", Some(b"/b"), false),
            b"/s/public/b"
        );
        assert_eq!(
            &*document_root(b"", b"/a/public", Some(b"/b"), true),
            b"/a/public"
        );
        assert_eq!(
            &*document_root(b"/x/public", b"/s/public", Some(b"/b"), false),
            b"/x/public"
        );
        assert_eq!(
            &*document_root(b"", b"/s/public", None, false),
            b"/s/public"
        );
        // Nothing is copied but under a base URI.
        assert!(matches!(
            document_root(b"", b"/s/public", None, false),
            Cow::Borrowed(_)
        ));
    }

    #[test]
    fn app_roots() {
        let root = app_root_of(Path::new("/s/app/public"), None).unwrap();
        assert!(matches!(&root, Cow::Borrowed(p) if *p == Path::new("/s/app")));
        assert_eq!(app_root_of(Path::new("/"), None), None);
        // Under a base URI the document root is resolved first (here it does not exist).
        let root = app_root_of(Path::new("/nonexistent/x/public"), Some(b"/b")).unwrap();
        assert_eq!(root, Path::new("/nonexistent/x"));
    }
}
