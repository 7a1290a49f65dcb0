// SPDX-License-Identifier: GPL-2.0
/*
 * kennel_feeder: an in-kernel watchdog "daemon" for kennel's test guests.
 *
 * On PVM hosts (KVM without VT-x/AMD-V, see kennel's host notes) guest user
 * space cannot make system calls, so a user-space watchdog daemon cannot run.
 * This built-in driver does what such a daemon does, through the ordinary
 * character-device interface: it opens /dev/watchdog with filp_open(), writes
 * one byte per feed, and for a clean stop writes the magic 'V' and closes the
 * file.  It never touches the watchdog hardware itself.
 *
 * About the writes: kernel_write() refuses files whose driver implements
 * .write but not .write_iter, which is the case of the watchdog core's
 * /dev/watchdog (it warns "kernel write not supported for file /watchdog").
 * So the feeder runs in a kernel thread that has a one-page user address space
 * of its own (mm_alloc + kthread_use_mm + vm_mmap) and calls vfs_write() with a
 * user pointer into that page: the very path a write(2) system call takes.
 *
 * Parameters (kernel command line: kennel_feeder.NAME=VALUE):
 *   interval_ms  ms between feeds; 0 = feeder off (default)
 *   start_ms     delay before opening /dev/watchdog (default 0)
 *   count        number of feeds, 0 = forever (default 0)
 *   close        what to do after `count` feeds: "magic" (write 'V' and
 *                close: watchdog disarmed, default) or "none" (stop writing
 *                but keep the file open: the watchdog expires)
 *   after_root   0 (default): run in a late initcall and hold the boot there
 *                forever after the feeds, so init never starts.
 *                1: do not hold the boot; a kernel thread waits until the
 *                kernel is about to start init (root file system mounted)
 *                before counting start_ms, like a daemon started by init.
 *
 * Every action prints one console line starting with "kennel_feeder: ", at
 * KERN_NOTICE, so that `loglevel=6` on the command line hides the kernel's
 * info-level chatter (a console character costs time under emulation) but
 * keeps these lines.
 */

#define pr_fmt(fmt) "kennel_feeder: " fmt

#include <linux/delay.h>
#include <linux/err.h>
#include <linux/fs.h>
#include <linux/init.h>
#include <linux/init_syscalls.h>
#include <linux/kernel.h>
#include <linux/kthread.h>
#include <linux/mman.h>
#include <linux/mm.h>
#include <linux/moduleparam.h>
#include <linux/mount.h>
#include <linux/sched.h>
#include <linux/sched/mm.h>
#include <linux/sched/signal.h>
#include <linux/uaccess.h>
#include <linux/stat.h>
#include <linux/string.h>
#include <linux/watchdog.h>

static unsigned int interval_ms;
module_param(interval_ms, uint, 0444);
MODULE_PARM_DESC(interval_ms, "ms between feeds, 0 = feeder off (default 0)");

static unsigned int start_ms;
module_param(start_ms, uint, 0444);
MODULE_PARM_DESC(start_ms, "ms to wait before opening /dev/watchdog (default 0)");

static unsigned int count;
module_param(count, uint, 0444);
MODULE_PARM_DESC(count, "number of feeds, 0 = forever (default 0)");

static char close_mode[8] = "magic";
module_param_string(close, close_mode, sizeof(close_mode), 0444);
MODULE_PARM_DESC(close, "after count feeds: magic (write 'V', close) or none (keep open) (default magic)");

static bool after_root;
module_param(after_root, bool, 0444);
MODULE_PARM_DESC(after_root, "0: feed from a late initcall and hold the boot; 1: feed from a thread once init is about to start (default 0)");

#define WDT_PATH	"/dev/watchdog"
#define BOOTSTATUS_PATH	"/sys/class/watchdog/watchdog0/bootstatus"
#define OPEN_RETRY_MS	100
#define OPEN_TIMEOUT_MS	60000
#define WAIT_ROOT_MS	100

/*
 * Open @path; if that fails (no such node, file system not mounted there,
 * read-only root without /dev ...), mount @fstype privately (not attached
 * anywhere in the namespace) and open @rel inside it.  Both give the same
 * file: devtmpfs and sysfs have a single super block.
 */
static struct file *open_fallback(const char *path, const char *fstype,
				  const char *rel, int flags, bool *fallback)
{
	struct file_system_type *type;
	struct vfsmount *mnt;
	struct file *f;

	*fallback = false;
	f = filp_open(path, flags, 0);
	if (!IS_ERR(f))
		return f;

	type = get_fs_type(fstype);
	if (!type)
		return f;
	mnt = vfs_kern_mount(type, 0, fstype, NULL);
	put_filesystem(type);
	if (IS_ERR(mnt))
		return f;
	f = file_open_root_mnt(mnt, rel, flags, 0);
	/* an open file holds its own reference to the mount */
	mntput(mnt);
	if (!IS_ERR(f))
		*fallback = true;
	return f;
}

static const char *bootstatus_words(unsigned long st)
{
	if (!st)
		return "none";
	if (st == WDIOF_CARDRESET)
		return "card reset";
	if (st & WDIOF_CARDRESET)
		return "card reset, other flags";
	return "other flags";
}

static void report_bootstatus(void)
{
	char buf[24] = "";
	unsigned long st;
	struct file *f;
	bool fallback;
	loff_t pos = 0;
	ssize_t n;

	f = open_fallback(BOOTSTATUS_PATH, "sysfs",
			  "class/watchdog/watchdog0/bootstatus", O_RDONLY,
			  &fallback);
	if (IS_ERR(f)) {
		pr_notice("bootstatus unavailable (open error %ld)\n", PTR_ERR(f));
		return;
	}
	n = kernel_read(f, buf, sizeof(buf) - 1, &pos);
	filp_close(f, NULL);
	if (n <= 0) {
		pr_notice("bootstatus unavailable (read error %zd)\n", n);
		return;
	}
	buf[n] = '\0';
	if (kstrtoul(strim(buf), 0, &st)) {
		pr_notice("bootstatus unavailable (unparsable \"%s\")\n", strim(buf));
		return;
	}
	pr_notice("bootstatus=0x%lx (%s)\n", st, bootstatus_words(st));
}

static struct file *open_watchdog(void)
{
	unsigned int waited = 0;
	struct file *f;
	bool fallback;

	for (;;) {
		f = open_fallback(WDT_PATH, "devtmpfs", "watchdog", O_WRONLY,
				  &fallback);
		if (!IS_ERR(f))
			break;
		if (waited >= OPEN_TIMEOUT_MS) {
			pr_notice("giving up: cannot open " WDT_PATH " after %u ms (error %ld)\n",
				waited, PTR_ERR(f));
			return NULL;
		}
		msleep(OPEN_RETRY_MS);
		waited += OPEN_RETRY_MS;
	}
	pr_notice("opened " WDT_PATH "%s\n",
		fallback ? " (via private devtmpfs mount)" : "");
	return f;
}

static void hold_forever(void)
{
	for (;;) {
		set_current_state(TASK_IDLE);
		schedule();
	}
}

/*
 * A user address space with one anonymous page, for this kernel thread only,
 * so that writes can go through vfs_write() with a __user buffer.
 */
static char __user *user_page_setup(void)
{
	struct mm_struct *mm;
	unsigned long addr;

	mm = mm_alloc();
	if (!mm)
		return ERR_PTR(-ENOMEM);
	arch_pick_mmap_layout(mm, &current->signal->rlim[RLIMIT_STACK]);
	/* our mm_alloc() reference (mm_users) is kept for the thread's life */
	kthread_use_mm(mm);
	addr = vm_mmap(NULL, 0, PAGE_SIZE, PROT_READ | PROT_WRITE,
		       MAP_PRIVATE | MAP_ANONYMOUS, 0);
	if (IS_ERR_VALUE(addr))
		return ERR_PTR((long)addr);
	return (char __user *)addr;
}

/* write(fd, &c, 1), as a daemon does */
static ssize_t write_byte(struct file *f, char __user *ubuf, char c)
{
	loff_t pos = 0;

	if (put_user(c, ubuf))
		return -EFAULT;
	return vfs_write(f, ubuf, 1, &pos);
}

/* Open, feed, then stop as configured.  Returns when done (or failed). */
static void run_feeder(void)
{
	char __user *ubuf;
	unsigned int fed = 0;
	struct file *f;
	ssize_t n;

	if (start_ms) {
		pr_notice("waiting %u ms before opening\n", start_ms);
		msleep(start_ms);
	}
	ubuf = user_page_setup();
	if (IS_ERR(ubuf)) {
		pr_notice("giving up: no user page for writes (error %ld)\n",
			PTR_ERR(ubuf));
		return;
	}
	f = open_watchdog();
	if (!f)
		return;
	report_bootstatus();

	while (!count || fed < count) {
		n = write_byte(f, ubuf, 'k');
		if (n != 1) {
			pr_notice("feed %u failed (error %zd)\n", fed + 1, n);
			break;
		}
		fed++;
		pr_notice("feed %u\n", fed);
		if (count && fed == count)
			break;
		msleep(interval_ms);
	}

	if (!strcmp(close_mode, "none")) {
		/* f stays open on purpose: the watchdog stays armed and expires */
		pr_notice("stopped feeding after %u feeds (close=none)\n", fed);
		return;
	}
	n = write_byte(f, ubuf, 'V');
	filp_close(f, NULL);
	if (n == 1)
		pr_notice("magic close after %u feeds\n", fed);
	else
		pr_notice("magic close failed after %u feeds (error %zd)\n", fed, n);
}

static int feeder_thread(void *unused)
{
	if (after_root) {
		/* SYSTEM_RUNNING is set just before the kernel execs init */
		while (system_state < SYSTEM_RUNNING)
			msleep(WAIT_ROOT_MS);
		pr_notice("init is starting: feeding as a daemon would\n");
	}
	run_feeder();
	/* the address space (and, with close=none, the open file) stay with us */
	hold_forever();
	return 0;
}

/* Give the initcall-mode feeder /dev/watchdog and /sys on the initial rootfs. */
static void __init prepare_rootfs(void)
{
	int err;

	init_mkdir("/dev", 0755);
	err = init_mount("devtmpfs", "/dev", "devtmpfs", 0, NULL);
	if (err && err != -EBUSY) {
		pr_notice("mount devtmpfs on /dev failed (error %d), using mknod\n", err);
		init_mknod(WDT_PATH, S_IFCHR | 0600, new_encode_dev(MKDEV(10, 130)));
	}
	init_mkdir("/sys", 0755);
	err = init_mount("sysfs", "/sys", "sysfs", 0, NULL);
	if (err && err != -EBUSY)
		pr_notice("mount sysfs on /sys failed (error %d)\n", err);
}

static int __init kennel_feeder_init(void)
{
	struct task_struct *t;

	if (!interval_ms) {
		pr_notice("off (interval_ms=0)\n");
		return 0;
	}
	if (strcmp(close_mode, "magic") && strcmp(close_mode, "none")) {
		pr_notice("unknown close=%s, using close=magic\n", close_mode);
		strscpy(close_mode, "magic", sizeof(close_mode));
	}
	pr_notice("start interval_ms=%u start_ms=%u count=%u close=%s after_root=%d\n",
		interval_ms, start_ms, count, close_mode, after_root);

	if (!after_root)
		prepare_rootfs();
	t = kthread_run(feeder_thread, NULL, "kennel_feeder");
	if (IS_ERR(t)) {
		pr_notice("cannot start thread (error %ld)\n", PTR_ERR(t));
		return 0;
	}
	if (!after_root) {
		pr_notice("holding the boot here (after_root=0)\n");
		hold_forever();
	}
	return 0;
}
late_initcall(kennel_feeder_init);
