/*
 * kennel-spin: an init that makes no system call at all and spins forever.
 *
 * On PVM hosts guest user space runs natively but cannot make system calls
 * (a stock guest kernel is not PVM-enabled), so any real init dies at once and
 * the kernel panics ("Attempted to kill init").  Tests boot with
 * init=/sbin/kennel-spin and kennel_feeder.after_root=1 instead.
 * Built with: as --64 -o kennel-spin.o kennel-spin.S && ld -static -nostdlib -s
 */
	.text
	.globl	_start
_start:
1:	pause
	jmp	1b
