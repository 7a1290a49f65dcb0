/* PVH entry for kennel's test guests: 32-bit protected mode, paging off,
 * %ebx = physical address of hvm_start_info. */
	.section .note.pvh, "a", @note
	.balign 4
	.long 4              /* name size: "Xen\0" */
	.long 4              /* desc size */
	.long 18             /* XEN_ELFNOTE_PHYS32_ENTRY */
	.asciz "Xen"
	.long _start

	.text
	.code32
	.globl _start
_start:
	cli
	movl $stack_top, %esp
	pushl %ebx
	call guest_main
1:	hlt
	jmp 1b

	.bss
	.balign 16
	.space 16384
stack_top:

	.section .note.GNU-stack, "", @progbits
