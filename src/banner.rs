//! What `passenger start` prints once the instance serves.

use crate::config::StartConfig;

pub fn banner(cfg: &StartConfig, pid: i32, background: bool) -> String {
    let title = format!(
        "=============== passenger-rs {} started ===============",
        passenger_protocol::VERSION
    );
    let urls = cfg.urls();
    let mut out = String::new();
    out.push_str(&title);
    out.push('\n');
    out.push_str(&format!(
        "App:            {} ({}, {})\n",
        cfg.app.root.display(),
        cfg.app.app_type.name(),
        cfg.app.started_by()
    ));
    out.push_str(&format!("Environment:    {}\n", cfg.environment));
    for (i, url) in urls.iter().enumerate() {
        let label = if i == 0 { "Accessible via:" } else { "" };
        out.push_str(&format!("{label:<15} {url}\n"));
    }
    out.push_str(&format!(
        "Log file:       {}\n",
        cfg.log_file
            .as_ref()
            .map_or_else(|| "this terminal".to_string(), |f| f.display().to_string())
    ));
    out.push_str(&format!(
        "PID file:       {} (PID {pid})\n",
        cfg.pid_file.display()
    ));
    out.push('\n');
    if background {
        out.push_str(&format!(
            "Running in the background. Stop it with: passenger stop --pid-file {}\n",
            cfg.pid_file.display()
        ));
    } else {
        out.push_str("Press Ctrl-C to stop.\n");
    }
    out.push_str(&"=".repeat(title.len()));
    out.push('\n');
    out
}
