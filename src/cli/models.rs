//! `sdxl models ...`: list, show, download and the search paths.

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use clap::Subcommand;
use sdxl_backend::model_loader::{DownloadEvent, ModelDetails, ModelLocations, directory_details};
use sdxl_backend::registry::{ModelEntry, Registries};
use serde::Serialize;

use super::table::emit;

/// `sdxl models ...`.
#[derive(Subcommand, Debug)]
pub enum ModelsAction {
    /// List the known checkpoints and whether each is downloaded.
    List {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Show a checkpoint's files, their components and sizes on disk.
    Show {
        /// A models.toml id or alias, or a checkpoint directory.
        id: String,
        /// Print JSON: {"id", "downloaded", "path", "files": [{"path", "component", "bytes"}], "total_bytes"}.
        #[arg(long)]
        json: bool,
    },
    /// Download a checkpoint's files from the Hugging Face hub into the shared HF cache
    /// (HF_ENDPOINT, HF_TOKEN, HF_HOME / HF_HUB_CACHE and HF_HUB_OFFLINE are honoured).
    Download {
        /// A models.toml id or alias.
        id: String,
        /// Print the result as JSON on stdout (progress still goes to stderr).
        #[arg(long)]
        json: bool,
    },
    /// The directories searched for checkpoints, in order.
    Paths {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

pub fn run(action: &ModelsAction, registries: &Registries) -> Result<()> {
    let locations = ModelLocations::from_env();
    match action {
        ModelsAction::List { json } => list(registries, &locations, *json),
        ModelsAction::Show { id, json } => show(id, registries, &locations, *json),
        ModelsAction::Download { id, json } => download(id, registries, &locations, *json),
        ModelsAction::Paths { json } => paths(&locations, *json),
    }
}

/// A registry entry with its local state, for `models list --json`.
#[derive(Serialize)]
struct ListedModel<'a> {
    #[serde(flatten)]
    entry: &'a ModelEntry,
    downloaded: bool,
    path: Option<PathBuf>,
}

fn list(registries: &Registries, locations: &ModelLocations, json: bool) -> Result<()> {
    let models: Vec<ListedModel> = registries
        .models
        .models()
        .map(|entry| {
            let path = locations.find(entry);
            ListedModel {
                entry,
                downloaded: path.is_some(),
                path,
            }
        })
        .collect();
    let rows = models
        .iter()
        .map(|m| {
            let source = m
                .entry
                .repo
                .clone()
                .or_else(|| m.entry.bundled.clone())
                .unwrap_or_default();
            vec![
                m.entry.id.clone(),
                format!("{:?}", m.entry.kind).to_lowercase(),
                if m.downloaded { "yes" } else { "no" }.to_string(),
                source,
                m.entry.label.clone(),
            ]
        })
        .collect();
    emit(
        json,
        &models,
        &["ID", "KIND", "DOWNLOADED", "SOURCE", "LABEL"],
        rows,
    )
}

fn unknown_model(id: &str, registries: &Registries) -> anyhow::Error {
    anyhow::anyhow!(
        "unknown model \"{id}\"{}; known ids: {}",
        registries.models.suggest(id),
        registries.models.ids().join(", ")
    )
}

fn entry<'a>(id: &str, registries: &'a Registries) -> Result<&'a ModelEntry> {
    registries
        .models
        .model(id)
        .ok_or_else(|| unknown_model(id, registries))
}

fn show(id: &str, registries: &Registries, locations: &ModelLocations, json: bool) -> Result<()> {
    let details = match registries.models.model(id) {
        Some(entry) => locations.details(entry),
        None if Path::new(id).is_dir() => directory_details(Path::new(id)),
        None => return Err(unknown_model(id, registries)),
    };
    if json {
        println!("{}", serde_json::to_string_pretty(&details)?);
        return Ok(());
    }
    print_details(&details);
    Ok(())
}

fn print_details(details: &ModelDetails) {
    println!("model:      {}", details.id);
    let state = match (&details.path, details.downloaded) {
        (Some(path), true) => format!("yes, {}", path.display()),
        (Some(path), false) => format!("no (partial copy in {})", path.display()),
        (None, _) => "no".to_string(),
    };
    println!("downloaded: {state}");
    let total = details
        .total_bytes
        .map_or_else(|| "-".to_string(), format_bytes);
    println!("on disk:    {total}");
    println!();
    let header = ["PATH", "COMPONENT", "BYTES"];
    let rows: Vec<Vec<String>> = details
        .files
        .iter()
        .map(|f| {
            vec![
                f.path.clone(),
                f.component.clone(),
                f.bytes
                    .map_or_else(|| "missing".to_string(), |b| b.to_string()),
            ]
        })
        .collect();
    // `emit` only fails when serialising JSON, which the table path does not do.
    let _ = emit(false, &(), &header, rows);
}

fn download(
    id: &str,
    registries: &Registries,
    locations: &ModelLocations,
    json: bool,
) -> Result<()> {
    let entry = entry(id, registries)?;
    if entry.repo.is_none() {
        let Some(dir) = locations.find(entry) else {
            bail!(
                "model \"{}\" has no `repo` in models.toml and its bundled copy is missing",
                entry.id
            );
        };
        eprintln!(
            "model \"{}\" is bundled with sdxl-backend; nothing to download",
            entry.id
        );
        println!("{}", dir.display());
        return Ok(());
    }
    let mut printer = ProgressPrinter::new(std::io::stderr().is_terminal());
    if locations.hub.offline {
        eprintln!("HF_HUB_OFFLINE is set: checking the cache only");
    } else {
        eprintln!(
            "downloading {} ({} at {}) from {} into {}",
            entry.id,
            entry.repo.as_deref().unwrap_or_default(),
            entry.revision,
            locations.hub.endpoint,
            locations.hub.cache_dir.display()
        );
    }
    let report = locations.download(entry, &mut |event| printer.event(&event))?;
    eprintln!(
        "{}: {} fetched, {} already cached; commit {}",
        report.id,
        report.fetched.len(),
        report.cached.len(),
        report.commit
    );
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        println!("{}", report.dir.display());
    }
    Ok(())
}

/// One line per file on stderr; on a terminal, a live byte counter for the file in flight.
struct ProgressPrinter {
    interactive: bool,
    last: Instant,
    last_quarter: u64,
}

impl ProgressPrinter {
    fn new(interactive: bool) -> Self {
        Self {
            interactive,
            last: Instant::now(),
            last_quarter: 0,
        }
    }

    fn event(&mut self, event: &DownloadEvent<'_>) {
        match *event {
            DownloadEvent::Cached { file, bytes } => {
                eprintln!("  cached      {file} ({})", format_bytes(bytes));
            }
            DownloadEvent::Started { file, done, total } => {
                self.last_quarter = 0;
                if done > 0 {
                    eprintln!(
                        "  resuming    {file} at {} of {}",
                        format_bytes(done),
                        format_bytes(total)
                    );
                } else {
                    eprintln!("  fetching    {file} ({})", format_bytes(total));
                }
            }
            DownloadEvent::Progress { file, done, total } => {
                let percent = (done * 100).checked_div(total).unwrap_or(100);
                if self.interactive {
                    if self.last.elapsed() >= Duration::from_millis(200) {
                        self.last = Instant::now();
                        eprint!(
                            "\r  {file}: {} / {} ({percent}%)   ",
                            format_bytes(done),
                            format_bytes(total)
                        );
                        let _ = std::io::stderr().flush();
                    }
                } else if percent / 25 > self.last_quarter && percent < 100 {
                    self.last_quarter = percent / 25;
                    eprintln!("  {file}: {percent}%");
                }
            }
            DownloadEvent::Finished { file, bytes } => {
                if self.interactive {
                    eprint!("\r\x1b[K");
                }
                eprintln!("  done        {file} ({})", format_bytes(bytes));
            }
        }
    }
}

/// The roots with whether each exists, for `models paths`.
#[derive(Serialize)]
struct ListedRoot {
    order: usize,
    kind: String,
    path: PathBuf,
    exists: bool,
}

fn paths(locations: &ModelLocations, json: bool) -> Result<()> {
    let roots: Vec<ListedRoot> = locations
        .roots
        .iter()
        .enumerate()
        .map(|(i, root)| ListedRoot {
            order: i + 1,
            kind: root.kind.to_string(),
            path: root.path.clone(),
            exists: root.path.is_dir(),
        })
        .collect();
    let rows = roots
        .iter()
        .map(|r| {
            vec![
                r.order.to_string(),
                r.kind.clone(),
                r.path.display().to_string(),
                if r.exists { "yes" } else { "no" }.to_string(),
            ]
        })
        .collect();
    emit(json, &roots, &["ORDER", "KIND", "PATH", "EXISTS"], rows)
}

/// Decimal units, as the hub shows sizes: `8.54 MB`.
fn format_bytes(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "kB", "MB", "GB", "TB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1000.0 && unit < UNITS.len() - 1 {
        value /= 1000.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.2} {}", UNITS[unit])
    }
}
