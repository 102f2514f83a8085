//! hf-hub's progress callbacks turned into [`DownloadEvent`]s.

use hf_hub::api::Progress;

use super::DownloadEvent;

/// Bridges hf-hub's progress calls to [`DownloadEvent`]s. hf-hub calls `init` before the first
/// and before every resumed attempt, then `update(offset)` with the bytes already on disk.
pub(super) struct ProgressAdapter<'a, 'b> {
    file: &'a str,
    callback: &'b mut dyn FnMut(DownloadEvent<'_>),
    done: u64,
    total: u64,
    started: bool,
}

impl<'a, 'b> ProgressAdapter<'a, 'b> {
    /// Reports the transfer of `file` (a layout path) to `callback`.
    pub(super) fn new(file: &'a str, callback: &'b mut dyn FnMut(DownloadEvent<'_>)) -> Self {
        Self {
            file,
            callback,
            done: 0,
            total: 0,
            started: false,
        }
    }
}

impl Progress for ProgressAdapter<'_, '_> {
    fn init(&mut self, size: usize, _filename: &str) {
        self.total = size as u64;
        self.done = 0;
    }

    fn update(&mut self, size: usize) {
        self.done += size as u64;
        if !self.started {
            self.started = true;
            (self.callback)(DownloadEvent::Started {
                file: self.file,
                done: self.done,
                total: self.total,
            });
        } else {
            (self.callback)(DownloadEvent::Progress {
                file: self.file,
                done: self.done,
                total: self.total,
            });
        }
    }

    fn finish(&mut self) {}
}
