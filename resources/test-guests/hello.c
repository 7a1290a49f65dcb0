/* Says hello on COM1 and then resets the machine through the keyboard
 * controller (with kennel --no-reboot, the VMM then exits 0). With the
 * word "halt" on the command line it halts forever instead. */
#include "guest.h"

void guest_main(u32 start_info)
{
	init(start_info);
	puts("kennel-test-guest: hello\n");
	if (has_word("halt"))
		halt_forever();
	reset_via_keyboard();
	halt_forever();
}
