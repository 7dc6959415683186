//! Moving bytes between the host and wgpu buffers in order with the recorded launches:
//! downloads through a staging buffer, uploads through `write_buffer` after the recorded
//! work is submitted, with partial words at either end merged.

use super::memory::Entry;
use super::{round_up, Pending, WgpuDevice};
use crate::error::{Error, Result};

impl WgpuDevice {
    /// Waits for everything submitted.
    pub(super) fn wait(&self) -> Result<()> {
        self.device
            .poll(::wgpu::PollType::wait_indefinitely())
            .map_err(|e| Error::Device {
                call: "device.poll".into(),
                message: e.to_string(),
            })?;
        Ok(())
    }

    /// `len` bytes (a multiple of 4) of `buffer` from `start` (a multiple of 4), after
    /// all work before: submits the recorded work, copies into a staging buffer, waits.
    pub(super) fn read_words(
        &self,
        p: &mut Pending,
        buffer: &::wgpu::Buffer,
        start: u64,
        len: u64,
    ) -> Result<Vec<u8>> {
        self.flush(p)?;
        let staging = self.scoped("create_buffer (download staging)", || {
            self.device.create_buffer(&::wgpu::BufferDescriptor {
                label: Some("fleetmoe download"),
                size: len,
                usage: ::wgpu::BufferUsages::MAP_READ | ::wgpu::BufferUsages::COPY_DST,
                mapped_at_creation: false,
            })
        })?;
        self.scoped("queue.submit (download copy)", || {
            let mut enc = self
                .device
                .create_command_encoder(&::wgpu::CommandEncoderDescriptor {
                    label: Some("fleetmoe download"),
                });
            enc.copy_buffer_to_buffer(buffer, start, &staging, 0, len);
            self.queue.submit([enc.finish()]);
        })?;
        let (tx, rx) = std::sync::mpsc::channel();
        staging.map_async(::wgpu::MapMode::Read, .., move |r| {
            let _ = tx.send(r);
        });
        self.wait()?;
        let mapped = rx.recv().map_err(|_| Error::Device {
            call: "buffer.map_async".into(),
            message: "the mapping callback was never called".into(),
        })?;
        mapped.map_err(|e| Error::Device {
            call: "buffer.map_async".into(),
            message: e.to_string(),
        })?;
        let data = staging
            .get_mapped_range(..)
            .map(|view| view.to_vec())
            .map_err(|e| Error::Device {
                call: "buffer.get_mapped_range".into(),
                message: e.to_string(),
            });
        staging.unmap();
        let data = data?;
        self.take_uncaptured()?;
        Ok(data)
    }

    /// Writes `data` at `offset` of `entry`, after all work recorded before. A partial
    /// word at either end is merged with the bytes beside it (read back first), except
    /// past the end of what the caller allocated, where the padding is zeros.
    pub(super) fn write(
        &self,
        p: &mut Pending,
        entry: &Entry,
        offset: u64,
        data: &[u8],
    ) -> Result<()> {
        self.flush(p)?;
        let end = offset + data.len() as u64;
        let start = offset / 4 * 4;
        let stop = round_up(end, 4);
        let mut words = vec![0u8; (stop - start) as usize];
        if start != offset {
            let head = self.read_words(p, &entry.buffer, start, 4)?;
            words[..4].copy_from_slice(&head);
        }
        if stop != end && end < entry.bytes && (stop - 4 != start || start == offset) {
            let tail = self.read_words(p, &entry.buffer, stop - 4, 4)?;
            let n = words.len();
            words[n - 4..].copy_from_slice(&tail);
        }
        let at = (offset - start) as usize;
        words[at..at + data.len()].copy_from_slice(data);
        self.scoped("queue.write_buffer", || {
            self.queue.write_buffer(&entry.buffer, start, &words);
        })
    }
}
