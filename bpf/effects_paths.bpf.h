/* SPDX-License-Identifier: Apache-2.0 */
/* Paths of file effects: the dentry walk up to the task's root, the directory a relative name
 * is resolved against, and the file record's header.
 *
 * Part of effects.bpf.c, included by it only, after the headers before it in that file's order
 * (one object, one set of maps: the split is for reading, the compiled code is unchanged). */
#ifndef VIGIL_EFFECTS_PATHS_H
#define VIGIL_EFFECTS_PATHS_H

/* ---- paths ---- */

/* One step up: prepend a component, or cross from a mount's root to where it is mounted. The
 * loop's context is a pointer to the scratch (bpf_loop wants a stack pointer; the state is in
 * the map). */
static long walk_step(__u32 i, struct scratch **sp)
{
	struct scratch *s = *sp;
	struct walk_state *w = &s->w;
	struct dentry *d = w->d, *parent, *mnt_root;
	struct vfsmount *mnt = w->mnt;
	struct mount *m, *mp;
	const unsigned char *name;
	__u32 len, pos;

	if (d == w->root_d && mnt == w->root_mnt) {
		w->done = 1;
		return 1;
	}
	parent = BPF_CORE_READ(d, d_parent);
	mnt_root = BPF_CORE_READ(mnt, mnt_root);
	if (d == mnt_root) {
		m = (void *)mnt - bpf_core_field_offset(struct mount, mnt);
		mp = BPF_CORE_READ(m, mnt_parent);
		if (mp == m) { /* top of the mount tree without meeting the root: outside it */
			w->done = 1;
			return 1;
		}
		w->d = BPF_CORE_READ(m, mnt_mountpoint);
		w->mnt = (void *)mp + bpf_core_field_offset(struct mount, mnt);
		return 0;
	}
	if (d == parent) { /* a disconnected dentry (pipe, anonymous inode) */
		w->done = 1;
		return 1;
	}
	len = BPF_CORE_READ(d, d_name.len);
	if (len > NAME_MAX)
		len = NAME_MAX;
	if (len + 1 > w->pos)
		return 1; /* no room: truncated */
	pos = w->pos - len - 1;
	if (pos >= EFFECT_PATH_MAX)
		return 1;
	name = BPF_CORE_READ(d, d_name.name);
	bpf_probe_read_kernel(s->walk + pos + 1, len, name);
	s->walk[pos] = '/';
	w->pos = pos;
	w->d = parent;
	return 0;
}

/* Write the path of (s->w.d, s->w.mnt), relative to the task's root, at data[off]; returns its
 * length and sets *truncated when it did not fit. */
static __u32 put_path(struct scratch *s, struct task_struct *task, __u32 off, __u32 *truncated)
{
	struct scratch *sp = s;
	__u32 pos, len;

	if (!s->w.d || !s->w.mnt)
		return 0;
	s->w.root_d = BPF_CORE_READ(task, fs, root.dentry);
	s->w.root_mnt = BPF_CORE_READ(task, fs, root.mnt);
	s->w.pos = EFFECT_PATH_MAX;
	s->w.done = 0;
	bpf_loop(EFFECT_PATH_STEPS, walk_step, &sp, 0);
	if (!s->w.done)
		*truncated = 1;
	pos = s->w.pos;
	if (pos >= EFFECT_PATH_MAX) { /* the root itself */
		s->walk[EFFECT_PATH_MAX - 1] = '/';
		pos = EFFECT_PATH_MAX - 1;
	}
	len = EFFECT_PATH_MAX - pos;
	if (off > (EFFECT_PATH_PARTS - 1) * EFFECT_PATH_MAX || len > EFFECT_PATH_MAX)
		return 0;
	bpf_probe_read_kernel(s->file.data + off, len, s->walk + pos);
	return len;
}

static __always_inline __u32 put_file_path(struct scratch *s, struct task_struct *task, struct file *f, __u32 off,
					   __u32 *truncated)
{
	s->w.d = BPF_CORE_READ(f, f_path.dentry);
	s->w.mnt = BPF_CORE_READ(f, f_path.mnt);
	return put_path(s, task, off, truncated);
}

/* The directory a relative name is resolved from: the cwd, or the file dirfd refers to. */
static __u32 put_dir(struct scratch *s, struct task_struct *task, __s32 dfd, __u32 off, __u32 *truncated)
{
	struct file *f;

	if (dfd == AT_FDCWD) {
		s->w.d = BPF_CORE_READ(task, fs, pwd.dentry);
		s->w.mnt = BPF_CORE_READ(task, fs, pwd.mnt);
		return put_path(s, task, off, truncated);
	}
	f = fd_file(task, dfd);
	if (!f)
		return 0;
	return put_file_path(s, task, f, off, truncated);
}

static __u32 put_user_str(struct scratch *s, const char *src, __u32 off)
{
	long n;

	if (off > (EFFECT_PATH_PARTS - 1) * EFFECT_PATH_MAX)
		return 0;
	n = bpf_probe_read_user_str(s->file.data + off, EFFECT_PATH_MAX, src);
	if (n <= 0) {
		s->file.hdr.flags |= FILE_PATH_UNREADABLE;
		return 0;
	}
	return (n - 1) & (EFFECT_PATH_MAX - 1); /* without the NUL; n <= EFFECT_PATH_MAX */
}

/* A path the process named: (resolved directory, its string) as parts `part` and `part + 1`. */
static __u32 put_named(struct call *c, __s32 dfd, const char *upath, __u32 off, int part)
{
	struct scratch *s = c->s;
	__u32 truncated = 0, base = 0, name;
	char first = 0;

	bpf_probe_read_user(&first, 1, upath);
	if (first != '/')
		base = put_dir(s, c->task, dfd, off, &truncated);
	if (truncated)
		s->file.hdr.flags |= part ? FILE_PATH2_TRUNCATED : FILE_PATH_TRUNCATED;
	if (base > EFFECT_PATH_MAX)
		base = EFFECT_PATH_MAX;
	name = put_user_str(s, upath, off + base);
	if (name > EFFECT_PATH_MAX)
		name = EFFECT_PATH_MAX;
	s->file.len[part & 2] = base;
	s->file.len[(part & 2) + 1] = name;
	return base + name;
}

static __always_inline void file_header(struct scratch *s, __u32 kind, struct task_struct *task,
					const struct tracked_info *info)
{
	fill_header(&s->file.hdr, kind, task, info);
	s->file.ret = 0;
	s->file.bytes = 0;
	s->file.calls = 0;
	s->file.first_ns = 0;
	s->file.last_ns = 0;
	s->file.ino = 0;
	s->file.dev = 0;
	s->file.fd = -1;
	s->file.open_flags = 0;
	s->file.mode = 0;
	s->file.reason = 0;
	s->file.len[0] = s->file.len[1] = s->file.len[2] = s->file.len[3] = 0;
}

static __always_inline void file_emit(struct scratch *s, __u32 kind, __u32 used)
{
	if (used > sizeof(s->file.data))
		used = sizeof(s->file.data);
	emit_effect(kind, &s->file, offsetof(struct file_event, data) + used);
}

static __always_inline void file_identity(struct scratch *s, struct file *f)
{
	s->file.ino = BPF_CORE_READ(f, f_inode, i_ino);
	s->file.dev = BPF_CORE_READ(f, f_inode, i_sb, s_dev);
}

#endif /* VIGIL_EFFECTS_PATHS_H */
