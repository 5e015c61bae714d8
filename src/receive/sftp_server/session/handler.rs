//! The SFTP requests of a partner's session, answered.

use super::*;

impl russh_sftp::server::Handler for Inbox {
    type Error = StatusReply;

    fn unimplemented(&self) -> Self::Error {
        StatusCode::OpUnsupported.with_message("not supported by dropgate")
    }

    async fn init(
        &mut self,
        _version: u32,
        _extensions: HashMap<String, String>,
    ) -> Result<Version, Self::Error> {
        // `limits@openssh.com` is not offered: with its 255 KiB writes,
        // OpenSSH's client spent twice the CPU and uploads ran slower here.
        let mut version = Version::new();
        version
            .extensions
            .insert(POSIX_RENAME.to_string(), "1".to_string());
        Ok(version)
    }

    async fn realpath(&mut self, id: u32, path: String) -> Result<Name, Self::Error> {
        let canonical = match self.resolve("realpath", &path)? {
            Place::Root => "/".to_string(),
            Place::Inbox => format!("/{INBOX}"),
            Place::InboxFile(name) => format!("/{INBOX}/{name}"),
            Place::Shelf(shelf) => format!("/{}", shelf.name()),
            Place::ShelfEntry(shelf, name) => format!("/{}/{name}", shelf.name()),
        };
        Ok(Name {
            id,
            files: vec![SftpFile::dummy(canonical)],
        })
    }

    async fn opendir(&mut self, id: u32, path: String) -> Result<Handle, Self::Error> {
        let entries = match self.resolve("opendir", &path)? {
            Place::Root => {
                let mut entries = vec![SftpFile::new(INBOX, directory_attrs())];
                for (shelf, _) in &self.shelves {
                    entries.push(SftpFile::new(shelf.name(), directory_attrs()));
                }
                entries
            }
            // The partner's own uploads not yet taken by dropgate.
            Place::Inbox => {
                let uploads = &self.shared.uploads;
                uploads
                    .list(&self.partner)
                    .into_iter()
                    .filter_map(|(name, upload)| {
                        Some(SftpFile::new(name, self.unfinished_attrs(&upload)?))
                    })
                    .collect()
            }
            // Exports or receipts for the partner; those being written start with a dot.
            Place::Shelf(shelf) => listing(self.shelf(shelf))?
                .into_iter()
                .filter(|f| !f.filename.starts_with('.'))
                .collect(),
            Place::ShelfEntry(shelf, name) if self.shelved(shelf, &name)?.is_dir() => {
                listing(&self.shelf(shelf).join(&name))?
                    .into_iter()
                    .filter(|f| !f.filename.starts_with('.'))
                    .collect()
            }
            Place::InboxFile(_) | Place::ShelfEntry(..) => {
                return Err(StatusCode::Failure.with_message("not a directory"));
            }
        };
        self.room_for_handle("opendir", false)?;
        let handle = self.handle(Open::Listing(Some(entries)));
        Ok(Handle { id, handle })
    }

    async fn readdir(&mut self, id: u32, handle: String) -> Result<Name, Self::Error> {
        match self.handles.get_mut(&handle) {
            Some(Open::Listing(entries)) => match entries.take() {
                Some(files) => Ok(Name { id, files }),
                None => Err(StatusCode::Eof.into()),
            },
            _ => Err(StatusCode::Failure.with_message("not a directory handle")),
        }
    }

    async fn stat(&mut self, id: u32, path: String) -> Result<Attrs, Self::Error> {
        let attrs = match self.resolve("stat", &path)? {
            Place::Root | Place::Inbox | Place::Shelf(_) => directory_attrs(),
            Place::InboxFile(name) => {
                let uploads = &self.shared.uploads;
                let staged = uploads
                    .find(&self.partner, &name)
                    .and_then(|upload| self.unfinished_attrs(&upload));
                match staged {
                    Some(attrs) => attrs,
                    None => self
                        .recently_received(&name)
                        .ok_or_else(|| StatusCode::NoSuchFile.with_message("no such file"))?,
                }
            }
            Place::ShelfEntry(shelf, name) => {
                let meta = self.shelved(shelf, &name)?;
                if meta.is_dir() {
                    directory_attrs()
                } else {
                    file_attrs(&meta)
                }
            }
        };
        Ok(Attrs { id, attrs })
    }

    async fn lstat(&mut self, id: u32, path: String) -> Result<Attrs, Self::Error> {
        self.stat(id, path).await
    }

    async fn fstat(&mut self, id: u32, handle: String) -> Result<Attrs, Self::Error> {
        match self.handles.get(&handle) {
            Some(Open::Upload {
                staged: Staged::Held { bytes, .. },
                ..
            }) => Ok(Attrs {
                id,
                attrs: upload_attrs(bytes.len() as u64, Some(SystemTime::now())),
            }),
            Some(
                Open::Upload {
                    staged: Staged::File(file),
                    ..
                }
                | Open::Download { file, .. },
            ) => Ok(Attrs {
                id,
                attrs: file_attrs(&file.metadata().map_err(io_failure)?),
            }),
            Some(Open::Listing(_)) => Ok(Attrs {
                id,
                attrs: directory_attrs(),
            }),
            None => Err(StatusCode::Failure.with_message("no such handle")),
        }
    }

    async fn open(
        &mut self,
        id: u32,
        filename: String,
        pflags: OpenFlags,
        _attrs: FileAttributes,
    ) -> Result<Handle, Self::Error> {
        let name = match self.resolve("open", &filename)? {
            Place::InboxFile(name) => name,
            Place::ShelfEntry(shelf, name) => {
                if pflags.intersects(
                    OpenFlags::WRITE | OpenFlags::APPEND | OpenFlags::CREATE | OpenFlags::TRUNCATE,
                ) {
                    return Err(self.refuse(
                        "open",
                        StatusCode::PermissionDenied
                            .with_message(format!("{}/ is read-only", shelf.name())),
                    ));
                }
                if self.shelved(shelf, &name)?.is_dir() {
                    return Err(StatusCode::Failure.with_message("a folder, not a file"));
                }
                let slot = self.room_for_handle("open", true)?.expect("a file slot");
                let path = self.shelf(shelf).join(&name);
                // Outbox names are dropgate's own (exports); a receipt is named
                // after the partner's file, so its download is audited without it.
                let name = match shelf {
                    Shelf::Outbox => format!("{}/{name}", shelf.name()),
                    Shelf::Receipts => shelf.name().to_string(),
                };
                let file = File::open(path).map_err(io_failure)?;
                let handle = self.handle(Open::Download {
                    name,
                    file,
                    sent: 0,
                    _slot: slot,
                });
                return Ok(Handle { id, handle });
            }
            _ => {
                return Err(self.refuse(
                    "open",
                    StatusCode::PermissionDenied
                        .with_message("files can only be written into inbox/"),
                ));
            }
        };
        if pflags.contains(OpenFlags::READ) || !pflags.contains(OpenFlags::WRITE) {
            return Err(self.refuse(
                "open",
                StatusCode::PermissionDenied.with_message("inbox/ is write-only"),
            ));
        }
        if !pflags.contains(OpenFlags::CREATE)
            && self.shared.uploads.find(&self.partner, &name).is_none()
        {
            return Err(StatusCode::NoSuchFile.with_message("no such file"));
        }
        let handle = self.open_upload(name, pflags)?;
        Ok(Handle { id, handle })
    }

    async fn write(
        &mut self,
        id: u32,
        handle: String,
        offset: u64,
        data: Vec<u8>,
    ) -> Result<Status, Self::Error> {
        let Some(Open::Upload {
            id: upload,
            staged,
            digest,
            refused,
            ..
        }) = self.handles.get_mut(&handle)
        else {
            return Err(StatusCode::Failure.with_message("not an upload handle"));
        };
        let end = offset.saturating_add(data.len() as u64);
        if let Err(refusal) = self.shared.uploads.grow(&self.partner, upload, end) {
            let first = !*refused;
            *refused = true;
            let message = refusal.message();
            return Err(match refusal.limit() {
                Some(limit) if first => self.refuse_limit("write", limit, message),
                _ => StatusCode::Failure.with_message(message),
            });
        }
        let path = self.shared.uploads.path(&self.partner, upload);
        staged.write_at(&data, offset, &path).map_err(io_failure)?;
        match digest {
            Some((hasher, next)) if *next == offset => {
                hasher.update(&data);
                *next += data.len() as u64;
            }
            // Out of order (or a rewrite): hashed from the file when landed.
            _ => *digest = None,
        }
        Ok(ok(id))
    }

    async fn close(&mut self, id: u32, handle: String) -> Result<Status, Self::Error> {
        match self.handles.remove(&handle) {
            Some(Open::Upload {
                id: upload,
                mut staged,
                digest,
                refused,
                _slot,
            }) => {
                let uploads = &self.shared.uploads;
                let path = uploads.path(&self.partner, &upload);
                if refused {
                    drop(staged);
                    if let Some(closed) = uploads.closed(&self.partner, &upload, None)
                        && (closed.land.is_some()
                            || uploads.remove(&self.partner, &closed.name).is_ok())
                    {
                        let _ = fs::remove_file(&path);
                    }
                    return Err(StatusCode::Failure
                        .with_message("the upload was refused and has been discarded"));
                }
                // Landed from memory only under a final name; an unfinished
                // upload (a temporary name) is kept in its staging file.
                if matches!(staged, Staged::Held { .. })
                    && !uploads.is_final(&self.partner, &upload)
                    && let Err(e) = staged.file(&path)
                {
                    uploads.abandoned(&self.partner, &upload);
                    return Err(io_failure(e));
                }
                let held = staged.take_held();
                let sha256 = match staged {
                    // Hashed when landed.
                    Staged::Held { .. } => None,
                    Staged::File(file) => {
                        // fsync can take milliseconds: off the async workers,
                        // which serve every other session meanwhile.
                        let synced = tokio::task::spawn_blocking(move || {
                            file.sync_all()?;
                            file.metadata().map(|m| m.len())
                        })
                        .await;
                        let size = match synced {
                            Ok(Ok(size)) => size,
                            // Not durable: kept unfinished (as an interrupted
                            // upload is), for the client to try again.
                            failed => {
                                if uploads.abandoned(&self.partner, &upload).is_some() {
                                    let _ = fs::remove_file(&path);
                                }
                                return Err(match failed {
                                    Ok(Err(e)) => io_failure(e),
                                    _ => StatusCode::Failure
                                        .with_message("could not finish the upload"),
                                });
                            }
                        };
                        match digest {
                            Some((hasher, written)) if written == size => {
                                Some(hex(&hasher.finalize()))
                            }
                            _ => None,
                        }
                    }
                };
                let Some(closed) = uploads.closed(&self.partner, &upload, sha256) else {
                    return Err(StatusCode::Failure.with_message("the upload was removed"));
                };
                match (closed.land, held) {
                    (Some(landing), held) => {
                        self.complete(&closed.name, landing, &closed.name, held)
                            .await?;
                    }
                    // Renamed to a temporary name meanwhile, by another
                    // session: kept as any unfinished upload is.
                    (None, Some(bytes)) => fs::write(&path, bytes).map_err(io_failure)?,
                    (None, None) => {}
                }
                Ok(ok(id))
            }
            Some(Open::Download { name, sent, .. }) => {
                tracing::info!(partner = %self.partner, remote = %self.peer, "SFTP download");
                self.audit(
                    "download",
                    None,
                    Some(serde_json::json!({ "name": name, "bytes": sent })),
                );
                Ok(ok(id))
            }
            Some(Open::Listing(_)) => Ok(ok(id)),
            None => Err(StatusCode::Failure.with_message("no such handle")),
        }
    }

    async fn rename(
        &mut self,
        id: u32,
        oldpath: String,
        newpath: String,
    ) -> Result<Status, Self::Error> {
        self.rename_upload(id, &oldpath, &newpath, false).await
    }

    async fn extended(
        &mut self,
        id: u32,
        request: String,
        data: Vec<u8>,
    ) -> Result<Packet, Self::Error> {
        if request != POSIX_RENAME {
            return Err(self.unimplemented());
        }
        let mut data = data.as_slice();
        let (Some(oldpath), Some(newpath)) = (ssh_string(&mut data), ssh_string(&mut data)) else {
            return Err(StatusCode::BadMessage.with_message("malformed posix-rename"));
        };
        self.rename_upload(id, &oldpath, &newpath, true)
            .await
            .map(Packet::Status)
    }

    async fn remove(&mut self, id: u32, filename: String) -> Result<Status, Self::Error> {
        let Place::InboxFile(name) = self.resolve("remove", &filename)? else {
            return Err(self.refuse(
                "remove",
                StatusCode::PermissionDenied
                    .with_message("only your own unfinished uploads can be removed"),
            ));
        };
        let upload = self
            .shared
            .uploads
            .remove(&self.partner, &name)
            .map_err(|r| self.refusal("remove", r))?;
        fs::remove_file(self.shared.uploads.path(&self.partner, &upload)).map_err(io_failure)?;
        Ok(ok(id))
    }

    async fn setstat(
        &mut self,
        id: u32,
        path: String,
        attrs: FileAttributes,
    ) -> Result<Status, Self::Error> {
        match self.resolve("setstat", &path)? {
            Place::InboxFile(name) => match self.shared.uploads.find(&self.partner, &name) {
                Some(upload) => {
                    self.set_size(&upload, &attrs, false)?;
                    Ok(ok(id))
                }
                // Just landed: its times may be set, its size not.
                None if attrs.size.is_none() && self.recently_received(&name).is_some() => {
                    Ok(ok(id))
                }
                None => Err(StatusCode::NoSuchFile.with_message("no such file")),
            },
            _ => Err(StatusCode::PermissionDenied.with_message("not allowed")),
        }
    }

    async fn fsetstat(
        &mut self,
        id: u32,
        handle: String,
        attrs: FileAttributes,
    ) -> Result<Status, Self::Error> {
        match self.handles.get_mut(&handle) {
            Some(Open::Upload {
                id: upload, staged, ..
            }) => {
                let upload = upload.clone();
                // A size is set on the staging file.
                if attrs.size.is_some() {
                    let path = self.shared.uploads.path(&self.partner, &upload);
                    staged.file(&path).map_err(io_failure)?;
                }
                self.set_size(&upload, &attrs, true)?;
                Ok(ok(id))
            }
            Some(_) if attrs.size.is_some() => {
                Err(StatusCode::PermissionDenied.with_message("not allowed"))
            }
            Some(_) => Ok(ok(id)),
            None => Err(StatusCode::Failure.with_message("no such handle")),
        }
    }

    async fn mkdir(
        &mut self,
        _id: u32,
        _path: String,
        _attrs: FileAttributes,
    ) -> Result<Status, Self::Error> {
        Err(self.refuse(
            "mkdir",
            StatusCode::PermissionDenied.with_message("folders cannot be made here"),
        ))
    }

    async fn rmdir(&mut self, _id: u32, _path: String) -> Result<Status, Self::Error> {
        Err(self.refuse(
            "rmdir",
            StatusCode::PermissionDenied.with_message("folders cannot be removed"),
        ))
    }

    async fn symlink(
        &mut self,
        _id: u32,
        _linkpath: String,
        _targetpath: String,
    ) -> Result<Status, Self::Error> {
        Err(self.refuse(
            "symlink",
            StatusCode::PermissionDenied.with_message("links are not allowed"),
        ))
    }

    async fn readlink(&mut self, _id: u32, _path: String) -> Result<Name, Self::Error> {
        Err(StatusCode::PermissionDenied.with_message("links are not allowed"))
    }

    async fn read(
        &mut self,
        id: u32,
        handle: String,
        offset: u64,
        len: u32,
    ) -> Result<Data, Self::Error> {
        let Some(Open::Download { file, sent, .. }) = self.handles.get_mut(&handle) else {
            return Err(self.refuse(
                "read",
                StatusCode::PermissionDenied.with_message("inbox/ is write-only"),
            ));
        };
        let mut data = vec![0u8; u64::from(len).min(MAX_READ_BYTES) as usize];
        let n = file.read_at(&mut data, offset).map_err(io_failure)?;
        if n == 0 {
            return Err(StatusCode::Eof.into());
        }
        data.truncate(n);
        *sent += n as u64;
        Ok(Data { id, data })
    }
}
