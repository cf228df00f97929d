/* The connector reader's per-exec path in C (collectors/probes/exec_events.py, `ExecSource._run_native`).
 *
 * Why: the exec reader runs for every exec on the host, and a Python thread woken per exec costs more than
 * the reads themselves (GIL hand-over, the interpreter on a cold cache). Here one call, with the GIL
 * released, waits for exec events, reads each new process's details from /proc at once (the same reads in
 * the same order as `read_one`), and returns to Python only when the batch is full, when execs pause for
 * the socket's receive timeout, `hold_ms` after its first record, or when nothing came for `wait_ms`.
 * Python then builds the records of a whole batch at a time (parent cache, queue, counts): the thread is
 * still woken per exec, but in C, with one system call per wakeup.
 *
 * Per exec: readlink exe; open, read, close cmdline; readlink exe again (exec'd since? then that command
 * line is the next program's); a pidfd (pidfd_open, one PIDFD_GET_INFO ioctl, close) for the real uid, the
 * ppid and the cgroup id, whose /proc/<pid>/cgroup line is read once per id (kept if the id is unchanged
 * after the read); where the kernel lacks the ioctl, status and cgroup are read; the parent's exe from a
 * short-lived cache of exes read (else a readlink). Nothing here allocates per exec except the record's
 * strings and the cache's copies.
 *
 * Everything read is hostile: lengths are bounded, every buffer is NUL-free binary until Python decodes it
 * (exe paths with surrogateescape, as os.readlink; command lines stay bytes).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#ifndef SYS_pidfd_open
#define SYS_pidfd_open 434
#endif

#define MAX_CMDLINE 16384
#define MAX_EXE 4096
#define MAX_STATUS 8191
#define MAX_CGROUP_FILE 4095
#define MAX_CGROUP_LINE 1024
#define CG_SLOTS 2048 /* cgroup id -> line, open addressing; cleared at CG_MAX entries */
#define CG_MAX 1024

/* netlink + connector + proc_event of one exec, native byte order (see exec_events.py) */
#define NLMSG_DONE_TYPE 3
#define CN_IDX_PROC 1
#define CN_VAL_PROC 1
#define PROC_EVENT_EXEC 0x2
#define ONE_EVENT 60

struct pidfd_info_v1 {
    uint64_t mask, cgroupid;
    uint32_t pid, tgid, ppid, ruid, rgid, euid, egid, suid, sgid, fsuid, fsgid, spare0;
};
#define PIDFD_INFO_PID (1u << 0)
#define PIDFD_INFO_CREDS (1u << 1)
#define PIDFD_INFO_CGROUPID (1u << 2)
#define PIDFD_GET_INFO _IOWR(0xFF, 11, struct pidfd_info_v1)

struct rec {
    int pid;
    double time;
    char *exe;       /* NULL: missing */
    Py_ssize_t exe_len;
    char *argv;      /* NULL: missing; up to MAX_CMDLINE + 1 bytes (more than MAX_CMDLINE: cut) */
    Py_ssize_t argv_len;
    long long uid, ppid; /* -1: missing */
    char *parent;    /* NULL: missing */
    Py_ssize_t parent_len;
    char *cgroup;    /* NULL: missing */
    Py_ssize_t cgroup_len;
};

#define EXE_SLOTS 4096 /* pid -> exe, open addressing; cleared at EXE_MAX entries */
#define EXE_MAX 2048
#define EXE_TTL_MS 1000.0

static double now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

static int pidfd_enabled = 1;
/* Held while one exec is read (its reads and both caches): two sources in one process (a test, a
 * benchmark) each have a reader thread, and the caches are the module's. */
static pthread_mutex_t cache_lock = PTHREAD_MUTEX_INITIALIZER;
/* The exe of each pid whose exec or whose exe we read in the last EXE_TTL_MS, for the parent of the next
 * execs: a shell's or a job runner's children cost no readlink of it. An exec of the pid replaces its
 * entry (kernel order); a pid's entry outlives it by at most EXE_TTL_MS (the probe's listing forgets the
 * dead as often in Python's reader); a kernel overflow (events lost) clears the whole cache. */
static int exe_pids[EXE_SLOTS];
static char *exe_paths[EXE_SLOTS];
static Py_ssize_t exe_lens[EXE_SLOTS];
static double exe_when[EXE_SLOTS];
static int exe_count = 0;
static uint64_t cg_ids[CG_SLOTS];
static char *cg_lines[CG_SLOTS];
static Py_ssize_t cg_lens[CG_SLOTS];
static int cg_count = 0;

static char *dup_bytes(const char *s, Py_ssize_t n) {
    char *p = malloc(n > 0 ? (size_t)n : 1);
    if (p != NULL && n > 0) memcpy(p, s, (size_t)n);
    return p;
}

static Py_ssize_t read_file(const char *path, char *buf, size_t size) {
    int fd = open(path, O_RDONLY | O_NONBLOCK | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0) return -1;
    ssize_t n = read(fd, buf, size);
    close(fd);
    return n;
}

static Py_ssize_t read_link(const char *path, char *buf) {
    ssize_t n = readlink(path, buf, MAX_EXE);
    return n >= MAX_EXE ? -1 : n; /* a longer target cannot be a path the kernel gave */
}

/* The last line of /proc/<pid>/cgroup (the unified hierarchy's where there is one), whitespace-trimmed. */
static Py_ssize_t last_line(char *buf, Py_ssize_t n, char **start) {
    while (n > 0 && (buf[n - 1] == '\n' || buf[n - 1] == ' ' || buf[n - 1] == '\t' || buf[n - 1] == '\r')) n--;
    Py_ssize_t i = n;
    while (i > 0 && buf[i - 1] != '\n') i--;
    while (i < n && (buf[i] == ' ' || buf[i] == '\t')) i++;
    *start = buf + i;
    return n - i;
}

static int cg_slot(uint64_t id) {
    unsigned s = (unsigned)((id * 0x9E3779B97F4A7C15ull) >> 53) & (CG_SLOTS - 1);
    while (cg_lines[s] != NULL && cg_ids[s] != id) s = (s + 1) & (CG_SLOTS - 1);
    return (int)s;
}

static void cg_clear(void) {
    for (int i = 0; i < CG_SLOTS; i++) {
        free(cg_lines[i]);
        cg_lines[i] = NULL;
    }
    cg_count = 0;
}

static void exe_clear(void) {
    for (int i = 0; i < EXE_SLOTS; i++) {
        free(exe_paths[i]);
        exe_paths[i] = NULL;
    }
    exe_count = 0;
}

static int exe_slot(int pid) {
    unsigned s = ((unsigned)pid * 2654435761u) >> 20 & (EXE_SLOTS - 1);
    while (exe_paths[s] != NULL && exe_pids[s] != pid) s = (s + 1) & (EXE_SLOTS - 1);
    return (int)s;
}

static void exe_learn(int pid, const char *exe, Py_ssize_t len, double when) {
    int s = exe_slot(pid);
    if (exe_paths[s] == NULL && exe_count >= EXE_MAX) {
        exe_clear();
        s = exe_slot(pid);
    }
    char *copy = dup_bytes(exe, len);
    if (copy == NULL) return;
    if (exe_paths[s] == NULL) exe_count++;
    free(exe_paths[s]);
    exe_paths[s] = copy;
    exe_pids[s] = pid;
    exe_lens[s] = len;
    exe_when[s] = when;
}

static void exe_forget(int pid) {
    int s = exe_slot(pid);
    if (exe_paths[s] != NULL) exe_when[s] = -EXE_TTL_MS; /* expired; the slot is reused by this pid only */
}

static int pid_info(int pidfd, struct pidfd_info_v1 *info) {
    memset(info, 0, sizeof *info);
    info->mask = PIDFD_INFO_PID | PIDFD_INFO_CREDS | PIDFD_INFO_CGROUPID;
    return ioctl(pidfd, PIDFD_GET_INFO, info);
}

static int unsupported(int e) { return e == ENOTTY || e == EINVAL || e == EOPNOTSUPP || e == ENOSYS; }

/* The cgroup line from <dir>cgroup, a malloc'd copy into r->cgroup (left NULL if unreadable). */
static void file_cgroup(const char *dir, struct rec *r) {
    char path[64], buf[MAX_CGROUP_FILE + 1], *line;
    snprintf(path, sizeof path, "%scgroup", dir);
    Py_ssize_t n = read_file(path, buf, MAX_CGROUP_FILE);
    if (n <= 0) return;
    Py_ssize_t len = last_line(buf, n, &line);
    if (len > MAX_CGROUP_LINE) len = MAX_CGROUP_LINE;
    r->cgroup = dup_bytes(line, len);
    r->cgroup_len = len;
}

static long long status_field(const char *buf, const char *key) {
    const char *at = strstr(buf, key);
    if (at == NULL) return -1;
    at += strlen(key);
    while (*at == ' ' || *at == '\t') at++;
    if (*at < '0' || *at > '9') return -1;
    long long v = 0;
    while (*at >= '0' && *at <= '9' && v < 0x7fffffffll) v = v * 10 + (*at++ - '0');
    return v;
}

/* uid, ppid and cgroup: a pidfd where the kernel answers, else status and cgroup. */
static void read_ids(int pid, const char *dir, struct rec *r) {
    if (pidfd_enabled) {
        int pidfd = (int)syscall(SYS_pidfd_open, pid, 0);
        if (pidfd < 0) {
            if (errno == ESRCH) return; /* reaped: its files are gone too */
            if (unsupported(errno) && errno != EINVAL) pidfd_enabled = 0;
        } else {
            struct pidfd_info_v1 info;
            int ok = pid_info(pidfd, &info) == 0;
            if (!ok && unsupported(errno)) pidfd_enabled = 0;
            if (ok && (info.mask & PIDFD_INFO_CREDS) && (info.mask & PIDFD_INFO_PID)) {
                r->uid = info.ruid;
                r->ppid = info.ppid;
                if (info.mask & PIDFD_INFO_CGROUPID) {
                    int s = cg_slot(info.cgroupid);
                    if (cg_lines[s] != NULL) {
                        r->cgroup = dup_bytes(cg_lines[s], cg_lens[s]);
                        r->cgroup_len = cg_lens[s];
                    } else {
                        file_cgroup(dir, r);
                        struct pidfd_info_v1 again;
                        if (r->cgroup != NULL && r->cgroup_len >= 3 && memcmp(r->cgroup, "0::", 3) == 0
                            && pid_info(pidfd, &again) == 0 && again.cgroupid == info.cgroupid) {
                            if (cg_count >= CG_MAX) {
                                cg_clear();
                                s = cg_slot(info.cgroupid);
                            }
                            cg_lines[s] = dup_bytes(r->cgroup, r->cgroup_len);
                            if (cg_lines[s] != NULL) {
                                cg_ids[s] = info.cgroupid;
                                cg_lens[s] = r->cgroup_len;
                                cg_count++;
                            }
                        }
                    }
                } else {
                    file_cgroup(dir, r);
                }
                close(pidfd);
                return;
            }
            close(pidfd);
        }
    }
    char path[64], buf[MAX_STATUS + 2];
    snprintf(path, sizeof path, "%sstatus", dir);
    Py_ssize_t n = read_file(path, buf + 1, MAX_STATUS);
    if (n > 0) {
        buf[0] = '\n';
        buf[n + 1] = '\0';
        r->uid = status_field(buf, "\nUid:");
        r->ppid = status_field(buf, "\nPPid:");
    }
    file_cgroup(dir, r);
}

/* "/proc/<pid>/" into `out` (at least 32 bytes); returns the end. */
static char *proc_dir(char *out, long long pid) {
    char digits[24];
    int n = 0;
    do digits[n++] = (char)('0' + pid % 10); while ((pid /= 10) > 0 && n < 20);
    memcpy(out, "/proc/", 6);
    char *p = out + 6;
    while (n > 0) *p++ = digits[--n];
    *p++ = '/';
    *p = '\0';
    return p;
}

static void read_exec(int pid, struct rec *r, char *argv_buf) {
    char dir[32], path[64], exe[MAX_EXE], again[MAX_EXE];
    struct timespec ts;
    memset(r, 0, sizeof *r);
    r->pid = pid;
    r->uid = r->ppid = -1;
    size_t dir_len = (size_t)(proc_dir(dir, pid) - dir);
    memcpy(path, dir, dir_len);
    memcpy(path + dir_len, "exe", 4);
    Py_ssize_t exe_len = read_link(path, exe); /* the identity, before anything else */
    clock_gettime(CLOCK_REALTIME, &ts);
    r->time = (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
    memcpy(path + dir_len, "cmdline", 8);
    Py_ssize_t argv_len = read_file(path, argv_buf, MAX_CMDLINE + 1);
    if (argv_len > 0) {
        memcpy(path + dir_len, "exe", 4);
        Py_ssize_t n = read_link(path, again);
        if (n != exe_len || exe_len < 0 || memcmp(exe, again, (size_t)n) != 0) argv_len = 0; /* exec'd again */
    }
    double now = now_ms();
    if (exe_len >= 0) {
        r->exe = dup_bytes(exe, exe_len);
        r->exe_len = exe_len;
        exe_learn(pid, exe, exe_len, now);
    } else {
        exe_forget(pid); /* exec'd: whatever it ran before is not its program */
    }
    if (argv_len > 0) {
        r->argv = dup_bytes(argv_buf, argv_len);
        r->argv_len = argv_len;
    }
    read_ids(pid, dir, r);
    if (r->ppid > 0 && r->ppid <= 0x7fffffff) {
        int s = exe_slot((int)r->ppid);
        if (exe_paths[s] != NULL && now - exe_when[s] < EXE_TTL_MS) {
            r->parent = dup_bytes(exe_paths[s], exe_lens[s]);
            r->parent_len = exe_lens[s];
            return;
        }
        memcpy(proc_dir(path, r->ppid), "exe", 4);
        Py_ssize_t n = read_link(path, exe);
        if (n >= 0) {
            r->parent = dup_bytes(exe, n);
            r->parent_len = n;
            exe_learn((int)r->ppid, exe, n, now);
        }
    }
}

static void free_rec(struct rec *r) {
    free(r->exe);
    free(r->argv);
    free(r->parent);
    free(r->cgroup);
}

/* The pid of an exec of a process's main thread in one datagram of one event, 0 for any other event, -1
 * for a datagram shorter than one event (an acknowledgement, or the wake-up that close() sends). */
static int exec_pid(const unsigned char *d, ssize_t n) {
    if (n < ONE_EVENT) return -1;
    uint32_t length, idx, val, what, pid, tgid;
    uint16_t type, cn_len;
    memcpy(&length, d, 4);
    memcpy(&type, d + 4, 2);
    memcpy(&idx, d + 16, 4);
    memcpy(&val, d + 20, 4);
    memcpy(&cn_len, d + 32, 2);
    memcpy(&what, d + 36, 4);
    memcpy(&pid, d + 52, 4);
    memcpy(&tgid, d + 56, 4);
    if (type != NLMSG_DONE_TYPE || idx != CN_IDX_PROC || val != CN_VAL_PROC || length < ONE_EVENT
        || n - (ssize_t)length < 0 || n - (ssize_t)length >= 4 || cn_len < ONE_EVENT - 36)
        return 0;
    if (what != PROC_EVENT_EXEC || pid != tgid || pid == 0 || pid > 0x7fffffff) return 0;
    return (int)pid;
}

static PyObject *str_or_none(const char *s, Py_ssize_t n) {
    if (s == NULL) Py_RETURN_NONE;
    return PyUnicode_DecodeFSDefaultAndSize(s, n);
}

static PyObject *int_or_none(long long v) {
    if (v < 0) Py_RETURN_NONE;
    return PyLong_FromLongLong(v);
}

PyDoc_STRVAR(read_batch_doc,
"read_batch(fd, wait_ms, hold_ms, budget, max_records) -> (records, execs, over_budget, overflows, errno)\n\n"
"Wait on the connector socket `fd` for exec events and read each exec's details at once, the GIL released.\n"
"Returns when nothing came for `wait_ms`, or once a batch has begun: when `max_records` are read, when no\n"
"exec came for the socket's receive timeout (SO_RCVTIMEO: one blocking read per exec), at the first exec\n"
"`hold_ms` after the batch's first, or when a datagram shorter than an event arrives (close()'s wake-up).\n"
"At most `budget` execs are read; the rest are\n"
"counted in `over_budget`. `overflows` counts ENOBUFS (the kernel dropped events); `errno` is a read error\n"
"that ended the call (0: none). Each record is (pid, time, exe, argv, uid, ppid, parent_exe, cgroup), where\n"
"None is missing; argv holds up to 16,385 bytes (more than 16,384: cut); cgroup is the raw line (bytes).");

static PyObject *read_batch(PyObject *self, PyObject *args) {
    int fd, wait_ms, hold_ms, budget, max_records;
    (void)self;
    if (!PyArg_ParseTuple(args, "iiiii", &fd, &wait_ms, &hold_ms, &budget, &max_records)) return NULL;
    if (max_records < 1 || max_records > 65536 || wait_ms < 0 || hold_ms < 0) {
        PyErr_SetString(PyExc_ValueError, "read_batch: max_records 1-65536, wait_ms and hold_ms >= 0");
        return NULL;
    }
    struct rec *recs = calloc((size_t)max_records, sizeof *recs);
    char *argv_buf = malloc(MAX_CMDLINE + 1);
    if (recs == NULL || argv_buf == NULL) {
        free(recs);
        free(argv_buf);
        return PyErr_NoMemory();
    }
    int n = 0, execs = 0, over = 0, overflows = 0, err = 0;
    unsigned char data[8192];
    Py_BEGIN_ALLOW_THREADS
    double first = 0;
    for (;;) {
        ssize_t got;
        if (n == 0) { /* wait for a batch's first exec */
            struct pollfd p = {fd, POLLIN, 0};
            int ready = poll(&p, 1, wait_ms);
            if (ready < 0) {
                if (errno == EINTR) continue;
                err = errno;
                break;
            }
            if (ready == 0) break;
            got = recv(fd, data, sizeof data, MSG_DONTWAIT);
        } else { /* the next ones: one blocking read each, which gives up after the socket's SO_RCVTIMEO */
            if (now_ms() - first >= hold_ms) break;
            got = recv(fd, data, sizeof data, 0);
            if (got < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) break; /* quiet: hand the batch over */
        }
        if (got < 0) {
            if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) continue;
            if (errno == ENOBUFS) {
                overflows++;
                pthread_mutex_lock(&cache_lock);
                exe_clear(); /* events were lost: what the cache knows may be stale */
                pthread_mutex_unlock(&cache_lock);
                continue;
            }
            err = errno;
            break;
        }
        int pid = exec_pid(data, got);
        if (pid < 0) break; /* a wake-up or an acknowledgement: hand back what we have */
        if (pid == 0) continue;
        execs++;
        if (budget <= 0) {
            over++;
            continue;
        }
        budget--;
        pthread_mutex_lock(&cache_lock);
        read_exec(pid, &recs[n], argv_buf);
        pthread_mutex_unlock(&cache_lock);
        if (n++ == 0) first = now_ms();
        if (n >= max_records) break;
    }
    Py_END_ALLOW_THREADS
    free(argv_buf);
    PyObject *list = PyList_New(n);
    for (int i = 0; i < n; i++) {
        struct rec *r = &recs[i];
        if (list != NULL) {
            PyObject *argv = r->argv != NULL ? PyBytes_FromStringAndSize(r->argv, r->argv_len) : Py_NewRef(Py_None);
            PyObject *cg = r->cgroup != NULL ? PyBytes_FromStringAndSize(r->cgroup, r->cgroup_len) : Py_NewRef(Py_None);
            PyObject *t = PyTuple_New(8);
            PyObject *items[8] = {PyLong_FromLong(r->pid), PyFloat_FromDouble(r->time),
                                  str_or_none(r->exe, r->exe_len), argv, int_or_none(r->uid),
                                  int_or_none(r->ppid), str_or_none(r->parent, r->parent_len), cg};
            int ok = t != NULL;
            for (int k = 0; k < 8; k++) {
                if (items[k] == NULL) ok = 0;
                else if (t != NULL) PyTuple_SET_ITEM(t, k, items[k]);
                else Py_DECREF(items[k]);
            }
            if (!ok) {
                Py_XDECREF(t); /* frees the items it holds; NULL slots are skipped */
                Py_CLEAR(list);
            } else {
                PyList_SET_ITEM(list, i, t);
            }
        }
        free_rec(r);
    }
    free(recs);
    if (list == NULL) return NULL;
    return Py_BuildValue("(Niiii)", list, execs, over, overflows, err);
}

static PyMethodDef methods[] = {
    {"read_batch", read_batch, METH_VARARGS, read_batch_doc},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_execread",
                                    "The connector reader's per-exec path (see exec_events.ExecSource._run_native).", -1,
                                    methods, NULL, NULL, NULL, NULL};

PyMODINIT_FUNC PyInit__execread(void) { return PyModule_Create(&module); }
