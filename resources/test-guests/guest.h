/* A freestanding runtime for kennel's test guests: no libc, 32-bit,
 * interrupts off. Everything is polled. */
#ifndef KENNEL_TEST_GUEST_H
#define KENNEL_TEST_GUEST_H

typedef unsigned char u8;
typedef unsigned short u16;
typedef unsigned int u32;
typedef unsigned long long u64;

static inline void outb(u16 p, u8 v) { __asm__ volatile("outb %0, %1" ::"a"(v), "Nd"(p)); }
static inline void outw(u16 p, u16 v) { __asm__ volatile("outw %0, %1" ::"a"(v), "Nd"(p)); }
static inline void outl(u16 p, u32 v) { __asm__ volatile("outl %0, %1" ::"a"(v), "Nd"(p)); }
static inline u8 inb(u16 p) { u8 v; __asm__ volatile("inb %1, %0" : "=a"(v) : "Nd"(p)); return v; }
static inline u16 inw(u16 p) { u16 v; __asm__ volatile("inw %1, %0" : "=a"(v) : "Nd"(p)); return v; }
static inline u32 inl(u16 p) { u32 v; __asm__ volatile("inl %1, %0" : "=a"(v) : "Nd"(p)); return v; }
static inline void mmio_w32(u32 a, u32 v) { *(volatile u32 *)a = v; }
static inline void mmio_w16(u32 a, u16 v) { *(volatile u16 *)a = v; }
static inline u32 mmio_r32(u32 a) { return *(volatile u32 *)a; }
static inline u16 mmio_r16(u32 a) { return *(volatile u16 *)a; }

void puts(const char *s);
void put_dec(u32 v);
void put_hex(u32 v);
void init(u32 start_info);
/* Value of NAME=<decimal or 0x hex> on the command line, or def. */
u32 param(const char *name, u32 def);
/* True when WORD (or WORD=...) appears on the command line. */
int has_word(const char *word);
void delay_ms(u32 ms);
u32 pci_read(u8 slot, u8 reg, int width);
void pci_write(u8 slot, u8 reg, int width, u32 v);
/* Slot of the first function with this vendor/device on bus 0, or 0xff. */
u8 pci_find(u16 vendor, u16 device);
void reset_via_keyboard(void);
void halt_forever(void);
#endif
