//! A FUSE file system that loses every write not made durable by `fsync`, on demand.
//!
//! It stands in for the disk under a process whose durability is in question. Files live
//! in memory; each file has its **current** bytes, which reads see, and its **durable**
//! bytes, a copy taken at the file's last `fsync` or `fdatasync`. [`LossyFs::power_off`]
//! is the power cut: from that instant every operation fails with `EIO`, and the
//! returned [`DiskImage`] holds only the durable bytes, which is what the disk would hold
//! after the machine came back.
//!
//! What counts as durable, and why:
//! - File data: only what an `fsync`/`fdatasync` of that file covered. A file never
//!   synced comes back empty. `sync_file_range` never reaches a FUSE file system
//!   (without a writeback cache every `write` is passed through at once, and the kernel
//!   has nothing to send), so it counts for nothing here, as on a disk whose volatile
//!   cache is lost: the kernel documents that it flushes neither metadata nor the
//!   device's cache.
//! - The namespace (create, rename, unlink, mkdir): durable at once. Journaling file
//!   systems commit metadata in order within seconds, and the question asked of this
//!   tool is whether *acknowledged data* survives, so the model is kind to metadata
//!   and strict about data.
//!
//! Mounting needs `/dev/fuse` and the right to mount (root, as on this project's
//! machines); the mount is direct, without `fusermount` or libfuse.

use std::{
    collections::{BTreeMap, HashMap},
    ffi::{OsStr, OsString},
    io::{self, BufRead, BufReader},
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::{Arc, Mutex, MutexGuard, PoisonError},
    time::{Duration, UNIX_EPOCH},
};

use fuser::{
    BackgroundSession, Config, Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags,
    Generation, INodeNo, LockOwner, MountOption, OpenFlags, RenameFlags, ReplyAttr, ReplyCreate,
    ReplyData, ReplyDirectory, ReplyEmpty, ReplyEntry, ReplyOpen, ReplyStatfs, ReplyWrite, Request,
    TimeOrNow, WriteFlags,
};

/// Attributes are never cached by the kernel: sizes change with every write.
const TTL: Duration = Duration::ZERO;

enum Content {
    File { current: Vec<u8>, durable: Vec<u8> },
    Dir { entries: BTreeMap<OsString, u64> },
}

struct Inode {
    content: Content,
    mode: u32,
}

struct State {
    inodes: HashMap<u64, Inode>,
    next_inode: u64,
    powered: bool,
    fsyncs: u64,
}

impl State {
    fn attr(&self, ino: u64) -> Option<FileAttr> {
        let inode = self.inodes.get(&ino)?;
        let (kind, size, nlink) = match &inode.content {
            Content::File { current, .. } => (FileType::RegularFile, current.len() as u64, 1),
            Content::Dir { .. } => (FileType::Directory, 0, 2),
        };
        Some(FileAttr {
            ino: INodeNo(ino),
            size,
            blocks: size.div_ceil(512),
            atime: UNIX_EPOCH,
            mtime: UNIX_EPOCH,
            ctime: UNIX_EPOCH,
            crtime: UNIX_EPOCH,
            kind,
            perm: (inode.mode & 0o7777) as u16,
            nlink,
            uid: 0,
            gid: 0,
            rdev: 0,
            blksize: 4096,
            flags: 0,
        })
    }

    fn entries(&self, dir: u64) -> Option<&BTreeMap<OsString, u64>> {
        match &self.inodes.get(&dir)?.content {
            Content::Dir { entries } => Some(entries),
            Content::File { .. } => None,
        }
    }

    fn entries_mut(&mut self, dir: u64) -> Result<&mut BTreeMap<OsString, u64>, Errno> {
        match &mut self.inodes.get_mut(&dir).ok_or(Errno::ENOENT)?.content {
            Content::Dir { entries } => Ok(entries),
            Content::File { .. } => Err(Errno::ENOTDIR),
        }
    }

    fn file_mut(&mut self, ino: u64) -> Result<(&mut Vec<u8>, &mut Vec<u8>), Errno> {
        match &mut self.inodes.get_mut(&ino).ok_or(Errno::ENOENT)?.content {
            Content::File { current, durable } => Ok((current, durable)),
            Content::Dir { .. } => Err(Errno::EISDIR),
        }
    }

    /// Adds a new inode named `name` in `parent`.
    fn make(
        &mut self,
        parent: u64,
        name: &OsStr,
        content: Content,
        mode: u32,
    ) -> Result<u64, Errno> {
        let ino = self.next_inode;
        let entries = self.entries_mut(parent)?;
        if entries.contains_key(name) {
            return Err(Errno::EEXIST);
        }
        entries.insert(name.to_owned(), ino);
        self.inodes.insert(ino, Inode { content, mode });
        self.next_inode += 1;
        Ok(ino)
    }

    /// What the disk holds after a power cut: directories, and files' durable bytes.
    fn image(&self) -> DiskImage {
        let mut image = DiskImage::default();
        let mut stack = vec![(u64::from(INodeNo::ROOT), PathBuf::new())];
        while let Some((dir, path)) = stack.pop() {
            for (name, ino) in self.entries(dir).into_iter().flatten() {
                let child = path.join(name);
                match self.inodes.get(ino).map(|i| &i.content) {
                    Some(Content::Dir { .. }) => {
                        image.entries.push((child.clone(), None));
                        stack.push((*ino, child));
                    }
                    Some(Content::File { durable, .. }) => {
                        image.entries.push((child, Some(durable.clone())));
                    }
                    None => {}
                }
            }
        }
        image
    }
}

/// The durable contents of a [`LossyFs`] at its power cut.
#[derive(Clone, Debug, Default)]
pub struct DiskImage {
    /// Paths relative to the mount point, parents first: `None` for a directory, the
    /// durable bytes for a file.
    pub entries: Vec<(PathBuf, Option<Vec<u8>>)>,
}

impl DiskImage {
    /// Writes the image under `root` (an ordinary directory), as the disk would be found.
    pub fn restore_to(&self, root: &Path) -> io::Result<()> {
        std::fs::create_dir_all(root)?;
        for (path, content) in &self.entries {
            let target = root.join(path);
            match content {
                None => std::fs::create_dir_all(&target)?,
                Some(bytes) => std::fs::write(&target, bytes)?,
            }
        }
        Ok(())
    }
}

/// A mounted lossy file system; unmounted when dropped.
pub struct LossyFs {
    state: Arc<Mutex<State>>,
    session: Option<BackgroundSession>,
}

impl LossyFs {
    /// Mounts an empty lossy file system at `mountpoint` (an existing empty directory).
    pub fn mount(mountpoint: &Path) -> io::Result<LossyFs> {
        let root = Inode {
            content: Content::Dir {
                entries: BTreeMap::new(),
            },
            mode: 0o755,
        };
        let state = Arc::new(Mutex::new(State {
            inodes: HashMap::from([(u64::from(INodeNo::ROOT), root)]),
            next_inode: u64::from(INodeNo::ROOT) + 1,
            powered: true,
            fsyncs: 0,
        }));
        let mut config = Config::default();
        config.mount_options = vec![MountOption::FSName("tenure-lossy".into())];
        let session = fuser::spawn_mount(
            Disk {
                state: state.clone(),
            },
            mountpoint,
            &config,
        )?;
        Ok(LossyFs {
            state,
            session: Some(session),
        })
    }

    /// Cuts the power: every later operation fails with `EIO`, and the image holds what
    /// was durable at this instant.
    pub fn power_off(&self) -> DiskImage {
        let mut state = lock(&self.state);
        state.powered = false;
        state.image()
    }

    /// `fsync`/`fdatasync` calls served so far.
    pub fn fsyncs(&self) -> u64 {
        lock(&self.state).fsyncs
    }

    /// Unmounts (every process using the mount must be gone).
    pub fn unmount(mut self) -> io::Result<()> {
        match self.session.take() {
            Some(session) => session.umount_and_join(),
            None => Ok(()),
        }
    }
}

impl Drop for LossyFs {
    fn drop(&mut self) {
        if let Some(session) = self.session.take() {
            let _ = session.umount_and_join();
        }
    }
}

/// Environment variable naming the directory a writer re-run by [`cut_power_during`]
/// writes in.
pub const WRITER_DIR_ENV: &str = "TENURE_LOSSY_WRITER_DIR";

/// How long [`cut_power_during`] waits for the writer's next acknowledgement.
const ACK_DEADLINE: Duration = Duration::from_secs(60);

/// The directory to write in when this process is the writer of [`cut_power_during`].
pub fn writer_dir() -> Option<PathBuf> {
    std::env::var_os(WRITER_DIR_ENV).map(PathBuf::from)
}

/// For the writer of [`cut_power_during`]: reports one acknowledged write (`line`, one
/// line of text) and waits until the test has taken it, so the writer is never ahead of
/// the power cut. Returns false once the test closed the pipe.
pub fn acknowledge(line: &str) -> bool {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    if writeln!(out, "ack {line}")
        .and_then(|()| out.flush())
        .is_err()
    {
        return false;
    }
    let mut go_on = String::new();
    matches!(std::io::stdin().read_line(&mut go_on), Ok(n) if n > 0)
}

/// A writer process, killed and waited for however the test ends.
struct Writer(std::process::Child);

impl Drop for Writer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A power cut in the middle of a writer process's work.
///
/// Mounts a lossy file system at `mount` and runs the test `test` of the current test
/// binary again as the writer, with [`WRITER_DIR_ENV`] set to `mount`. The writer calls
/// [`acknowledge`] after each write it saw acknowledged, and waits there until it is
/// told to go on: the two run in lockstep. Right after the `acknowledgements`-th
/// acknowledgement the power is cut (the writer still waiting), the writer is killed
/// with SIGKILL, and the file system unmounted. Returns the disk image and the
/// acknowledged lines (what followed `ack `). A writer silent for a minute, or gone
/// early, is an error; the writer is killed and the file system unmounted either way.
pub fn cut_power_during(
    mount: &Path,
    test: &str,
    acknowledgements: usize,
) -> io::Result<(DiskImage, Vec<String>)> {
    use std::io::Write;
    let fs = LossyFs::mount(mount)?;
    let mut writer = Writer(
        Command::new(std::env::current_exe()?)
            .args(["--exact", test, "--nocapture", "--test-threads=1"])
            .env(WRITER_DIR_ENV, mount)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()?,
    );
    let (mut go_on, stdout) = match (writer.0.stdin.take(), writer.0.stdout.take()) {
        (Some(stdin), Some(stdout)) => (stdin, stdout),
        _ => return Err(io::Error::other("the writer has no pipes")),
    };
    let (lines_tx, lines) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            if lines_tx.send(line).is_err() {
                return;
            }
        }
    });
    let mut acknowledged = Vec::new();
    while acknowledged.len() < acknowledgements {
        let line = match lines.recv_timeout(ACK_DEADLINE) {
            Ok(line) => line?,
            Err(_) => {
                return Err(io::Error::other(format!(
                    "the writer stopped or fell silent after {} acknowledgements",
                    acknowledged.len()
                )));
            }
        };
        // The test harness prints its own words too, and may not end its line
        // ("test name ... ") before the writer's first.
        let Some((_, ack)) = line.split_once("ack ") else {
            continue;
        };
        acknowledged.push(ack.to_owned());
        if acknowledged.len() < acknowledgements {
            writeln!(go_on)?;
            go_on.flush()?;
        }
    }
    let image = fs.power_off();
    drop(writer);
    fs.unmount()?;
    Ok((image, acknowledged))
}

/// What a power cut left: the disk as found afterwards, and what had been acknowledged.
pub struct PowerCut {
    /// Holds everything; removed when dropped.
    _dir: tempfile::TempDir,
    /// An ordinary directory holding the durable contents of the writer's directory.
    pub restored: PathBuf,
    /// The acknowledged lines, oldest first.
    pub acknowledged: Vec<String>,
}

/// [`cut_power_during`] in a temporary directory, with the disk image restored to
/// [`PowerCut::restored`]: what the writer wrote under [`writer_dir`] is found there.
pub fn power_cut(test: &str, acknowledgements: usize) -> io::Result<PowerCut> {
    let dir = tempfile::tempdir()?;
    let mount = dir.path().join("disk");
    std::fs::create_dir(&mount)?;
    let (image, acknowledged) = cut_power_during(&mount, test, acknowledgements)?;
    let restored = dir.path().join("restored");
    image.restore_to(&restored)?;
    Ok(PowerCut {
        _dir: dir,
        restored,
        acknowledged,
    })
}

fn lock(state: &Mutex<State>) -> MutexGuard<'_, State> {
    state.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The FUSE side, sharing the state with its [`LossyFs`].
struct Disk {
    state: Arc<Mutex<State>>,
}

impl Disk {
    /// The state, or `EIO` once the power is off.
    fn powered(&self) -> Result<MutexGuard<'_, State>, Errno> {
        let state = lock(&self.state);
        if state.powered {
            Ok(state)
        } else {
            Err(Errno::EIO)
        }
    }

    /// Files and directories need no handle of their own.
    fn open_reply(&self, reply: ReplyOpen) {
        match self.powered() {
            Ok(_) => reply.opened(FileHandle(0), FopenFlags::empty()),
            Err(errno) => reply.error(errno),
        }
    }

    fn entry_reply(&self, outcome: Result<FileAttr, Errno>, reply: ReplyEntry) {
        match outcome {
            Ok(attr) => reply.entry(&TTL, &attr, Generation(0)),
            Err(errno) => reply.error(errno),
        }
    }

    fn make(
        &self,
        parent: INodeNo,
        name: &OsStr,
        content: Content,
        mode: u32,
    ) -> Result<FileAttr, Errno> {
        let mut state = self.powered()?;
        let ino = state.make(parent.into(), name, content, mode)?;
        state.attr(ino).ok_or(Errno::EIO)
    }
}

fn new_file() -> Content {
    Content::File {
        current: Vec::new(),
        durable: Vec::new(),
    }
}

fn empty_reply(outcome: Result<(), Errno>, reply: ReplyEmpty) {
    match outcome {
        Ok(()) => reply.ok(),
        Err(errno) => reply.error(errno),
    }
}

impl Filesystem for Disk {
    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let outcome = self.powered().and_then(|state| {
            let ino = state
                .entries(parent.into())
                .ok_or(Errno::ENOTDIR)?
                .get(name)
                .copied()
                .ok_or(Errno::ENOENT)?;
            state.attr(ino).ok_or(Errno::ENOENT)
        });
        self.entry_reply(outcome, reply);
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        match self
            .powered()
            .and_then(|state| state.attr(ino.into()).ok_or(Errno::ENOENT))
        {
            Ok(attr) => reply.attr(&TTL, &attr),
            Err(errno) => reply.error(errno),
        }
    }

    fn setattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        _uid: Option<u32>,
        _gid: Option<u32>,
        size: Option<u64>,
        _atime: Option<TimeOrNow>,
        _mtime: Option<TimeOrNow>,
        _ctime: Option<std::time::SystemTime>,
        _fh: Option<FileHandle>,
        _crtime: Option<std::time::SystemTime>,
        _chgtime: Option<std::time::SystemTime>,
        _bkuptime: Option<std::time::SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        let outcome = self.powered().and_then(|mut state| {
            let ino = u64::from(ino);
            if let Some(size) = size {
                let size = usize::try_from(size).map_err(|_| Errno::EFBIG)?;
                state.file_mut(ino)?.0.resize(size, 0);
            }
            if let Some(mode) = mode {
                state.inodes.get_mut(&ino).ok_or(Errno::ENOENT)?.mode = mode;
            }
            state.attr(ino).ok_or(Errno::ENOENT)
        });
        match outcome {
            Ok(attr) => reply.attr(&TTL, &attr),
            Err(errno) => reply.error(errno),
        }
    }

    fn mknod(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        _umask: u32,
        _rdev: u32,
        reply: ReplyEntry,
    ) {
        let outcome = if mode & S_IFMT == S_IFREG {
            self.make(parent, name, new_file(), mode)
        } else {
            Err(Errno::EPERM)
        };
        self.entry_reply(outcome, reply);
    }

    fn mkdir(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        _umask: u32,
        reply: ReplyEntry,
    ) {
        let dir = Content::Dir {
            entries: BTreeMap::new(),
        };
        self.entry_reply(self.make(parent, name, dir, mode), reply);
    }

    fn unlink(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        // The inode stays: a process may still have it open.
        let outcome = self.powered().and_then(|mut state| {
            state
                .entries_mut(parent.into())?
                .remove(name)
                .map(|_| ())
                .ok_or(Errno::ENOENT)
        });
        empty_reply(outcome, reply);
    }

    fn rmdir(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let outcome = self.powered().and_then(|mut state| {
            let ino = state
                .entries(parent.into())
                .ok_or(Errno::ENOTDIR)?
                .get(name)
                .copied()
                .ok_or(Errno::ENOENT)?;
            if !state.entries(ino).ok_or(Errno::ENOTDIR)?.is_empty() {
                return Err(Errno::ENOTEMPTY);
            }
            state.entries_mut(parent.into())?.remove(name);
            Ok(())
        });
        empty_reply(outcome, reply);
    }

    fn rename(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        let outcome = self.powered().and_then(|mut state| {
            if flags != RenameFlags::empty() {
                return Err(Errno::EINVAL);
            }
            let ino = state
                .entries_mut(parent.into())?
                .remove(name)
                .ok_or(Errno::ENOENT)?;
            state
                .entries_mut(newparent.into())?
                .insert(newname.to_owned(), ino);
            Ok(())
        });
        empty_reply(outcome, reply);
    }

    fn open(&self, _req: &Request, _ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        self.open_reply(reply);
    }

    fn read(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        let outcome = self.powered().and_then(|mut state| {
            let current = &*state.file_mut(ino.into())?.0;
            let start = usize::try_from(offset).map_err(|_| Errno::EINVAL)?;
            let end = start.saturating_add(size as usize).min(current.len());
            Ok(current.get(start..end).unwrap_or_default().to_vec())
        });
        match outcome {
            Ok(bytes) => reply.data(&bytes),
            Err(errno) => reply.error(errno),
        }
    }

    fn write(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        data: &[u8],
        _write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        let outcome = self.powered().and_then(|mut state| {
            let current = state.file_mut(ino.into())?.0;
            let start = usize::try_from(offset).map_err(|_| Errno::EFBIG)?;
            let end = start.checked_add(data.len()).ok_or(Errno::EFBIG)?;
            if current.len() < end {
                current.resize(end, 0);
            }
            current
                .get_mut(start..end)
                .ok_or(Errno::EIO)?
                .copy_from_slice(data);
            u32::try_from(data.len()).map_err(|_| Errno::EFBIG)
        });
        match outcome {
            Ok(written) => reply.written(written),
            Err(errno) => reply.error(errno),
        }
    }

    fn fsync(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        let outcome = self.powered().and_then(|mut state| {
            let (current, durable) = state.file_mut(ino.into())?;
            durable.clone_from(current);
            state.fsyncs += 1;
            Ok(())
        });
        empty_reply(outcome, reply);
    }

    fn opendir(&self, _req: &Request, _ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        self.open_reply(reply);
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        let listing = self.powered().and_then(|state| {
            let entries = state.entries(ino.into()).ok_or(Errno::ENOTDIR)?;
            let mut listing = vec![
                (ino, FileType::Directory, OsString::from(".")),
                (ino, FileType::Directory, OsString::from("..")),
            ];
            for (name, child) in entries {
                let kind = match state.inodes.get(child).map(|i| &i.content) {
                    Some(Content::Dir { .. }) => FileType::Directory,
                    _ => FileType::RegularFile,
                };
                listing.push((INodeNo(*child), kind, name.clone()));
            }
            Ok(listing)
        });
        match listing {
            Ok(listing) => {
                let skip = usize::try_from(offset).unwrap_or(usize::MAX);
                for (index, (child, kind, name)) in listing.into_iter().enumerate().skip(skip) {
                    if reply.add(child, index as u64 + 1, kind, name) {
                        break;
                    }
                }
                reply.ok();
            }
            Err(errno) => reply.error(errno),
        }
    }

    fn fsyncdir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        // The namespace is durable at once (see the module docs).
        empty_reply(self.powered().map(|_| ()), reply);
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        reply.statfs(1 << 24, 1 << 23, 1 << 23, 1 << 20, 1 << 19, 4096, 255, 4096);
    }

    fn create(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        _umask: u32,
        _flags: i32,
        reply: ReplyCreate,
    ) {
        match self.make(parent, name, new_file(), mode) {
            Ok(attr) => reply.created(
                &TTL,
                &attr,
                Generation(0),
                FileHandle(0),
                FopenFlags::empty(),
            ),
            Err(errno) => reply.error(errno),
        }
    }
}

/// `S_IFMT`: the file-type bits of a mode.
const S_IFMT: u32 = 0o170000;

/// `S_IFREG`: a regular file.
const S_IFREG: u32 = 0o100000;
