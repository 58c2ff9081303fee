//! Who an app runs as. When the agents run as root, an app never does: it runs as
//! `passenger_user`/`passenger_group` if set, else (with `passenger_user_switching on`) as the
//! owner of its startup file, else as `passenger_default_user`; root is always replaced by the
//! default user. Agents that are not root start apps as themselves.

use crate::app_options::AppOptions;
use nix::unistd::{Gid, Group, Uid, User};
use std::ffi::CString;
use std::os::unix::fs::MetadataExt;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub user: String,
    pub uid: Uid,
    pub gid: Gid,
    /// Supplementary groups, set when switching.
    pub groups: Vec<Gid>,
    pub home: String,
    pub shell: String,
    /// The process must change to this identity (the agents are root).
    pub switch: bool,
}

impl Identity {
    pub fn describe(&self) -> String {
        format!("{} (uid {}, gid {})", self.user, self.uid, self.gid)
    }

    fn of(user: &User, gid: Gid, switch: bool) -> Result<Identity, String> {
        let groups = if switch {
            let name = CString::new(user.name.as_str()).map_err(|e| e.to_string())?;
            nix::unistd::getgrouplist(&name, gid).unwrap_or_else(|_| vec![gid])
        } else {
            Vec::new()
        };
        Ok(Identity {
            user: user.name.clone(),
            uid: user.uid,
            gid,
            groups,
            home: user.dir.to_string_lossy().into_owned(),
            shell: user.shell.to_string_lossy().into_owned(),
            switch,
        })
    }
}

/// The identity the app's processes get.
pub fn resolve(options: &AppOptions) -> Result<Identity, String> {
    if !nix::unistd::geteuid().is_root() {
        return current();
    }
    let spawn = &options.spawn;
    // The user, and the group that goes with how it was chosen.
    let (user, implied_gid) = if let Some(name) = &spawn.user {
        let user = lookup_user(name, "passenger_user")?;
        if user.uid.is_root() {
            tracing::warn!(
                "passenger_user {name} is root, and apps never run as root; using \
                 passenger_default_user {} for {}",
                spawn.default_user,
                options.app_root
            );
            default_user(options)?
        } else {
            let gid = user.gid;
            (user, gid)
        }
    } else if spawn.user_switching {
        owner_of_startup_file(options)?
    } else {
        default_user(options)?
    };
    let gid = match &spawn.group {
        Some(name) => {
            let group = lookup_group(name, "passenger_group")?;
            if group.gid.as_raw() == 0 {
                tracing::warn!(
                    "passenger_group {name} is root's group, which apps never get; using {}'s \
                     primary group for {}",
                    user.name,
                    options.app_root
                );
                user.gid
            } else {
                group.gid
            }
        }
        None => implied_gid,
    };
    Identity::of(&user, gid, true)
}

fn current() -> Result<Identity, String> {
    let uid = nix::unistd::getuid();
    match User::from_uid(uid) {
        Ok(Some(user)) => Identity::of(&user, nix::unistd::getgid(), false),
        _ => Ok(Identity {
            user: uid.to_string(),
            uid,
            gid: nix::unistd::getgid(),
            groups: Vec::new(),
            home: std::env::var("HOME").unwrap_or_else(|_| "/".into()),
            shell: "/bin/sh".into(),
            switch: false,
        }),
    }
}

/// The startup file's owner (with the file's group unless that is root's); root's files run
/// as the default user.
fn owner_of_startup_file(options: &AppOptions) -> Result<(User, Gid), String> {
    let meta = std::fs::metadata(&options.startup_file)
        .or_else(|_| std::fs::metadata(&options.app_root))
        .map_err(|e| {
            format!(
                "cannot stat the app's startup file {}: {e}",
                options.startup_file
            )
        })?;
    if meta.uid() == 0 {
        return default_user(options);
    }
    let user = User::from_uid(Uid::from_raw(meta.uid()))
        .ok()
        .flatten()
        .ok_or_else(|| {
            format!(
                "the startup file {} belongs to uid {}, which has no user account; create one \
                 or set passenger_user",
                options.startup_file,
                meta.uid()
            )
        })?;
    let gid = if meta.gid() == 0 {
        user.gid
    } else {
        Gid::from_raw(meta.gid())
    };
    Ok((user, gid))
}

fn default_user(options: &AppOptions) -> Result<(User, Gid), String> {
    let spawn = &options.spawn;
    let user = lookup_user(&spawn.default_user, "passenger_default_user")?;
    if user.uid.is_root() {
        return Err(format!(
            "passenger_default_user {} is root, and apps never run as root; set it to an \
             unprivileged user",
            spawn.default_user
        ));
    }
    let gid = match &spawn.default_group {
        Some(name) => lookup_group(name, "passenger_default_group")?.gid,
        None => user.gid,
    };
    Ok((user, gid))
}

fn lookup_user(name: &str, directive: &str) -> Result<User, String> {
    match User::from_name(name) {
        Ok(Some(user)) => Ok(user),
        Ok(None) => Err(format!(
            "{directive} {name}: there is no such user on this system"
        )),
        Err(e) => Err(format!("{directive} {name}: cannot look the user up: {e}")),
    }
}

fn lookup_group(name: &str, directive: &str) -> Result<Group, String> {
    match Group::from_name(name) {
        Ok(Some(group)) => Ok(group),
        Ok(None) => Err(format!(
            "{directive} {name}: there is no such group on this system"
        )),
        Err(e) => Err(format!("{directive} {name}: cannot look the group up: {e}")),
    }
}
