/*
 * Fuzz target: the WebSocket frame tracker (lib/websocket.c), fed what
 * a client or an upstream could send through a tunnel.  The first byte
 * chooses where the stream is split; the tracker must agree with itself
 * whatever the split, with a second pass a byte at a time, and with a
 * third that stops at the end of a frame (as a tunnel's goodbye does).
 */
#include <stdint.h>
#include <string.h>

#include "lib/websocket.h"

int	LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct ws_track a = { 0 }, b = { 0 }, c = { 0 };
	size_t split, i, k;

	if (size == 0)
		return 0;
	split = data[0] % size;
	data++;
	size--;
	if (split > size)
		split = size;
	ws_track_feed(&a, data, split);
	ws_track_feed(&a, data + split, size - split);
	for (i = 0; i < size; i++)
		ws_track_feed(&b, data + i, 1);
	if (ws_track_boundary(&a) != ws_track_boundary(&b) ||
	    a.closed != b.closed || a.broken != b.broken || a.left != b.left)
		__builtin_trap();
	/* Up to a frame's end, then the rest: the same as all at once;
	 * and it stops only at an end (or the input's, or broken bytes). */
	ws_track_feed(&c, data, split);
	k = ws_track_to_boundary(&c, data + split, size - split);
	if (split + k < size && !ws_track_boundary(&c) && !c.broken)
		__builtin_trap();
	ws_track_feed(&c, data + split + k, size - split - k);
	if (ws_track_boundary(&a) != ws_track_boundary(&c) ||
	    a.closed != c.closed || a.broken != c.broken || a.left != c.left)
		__builtin_trap();
	return 0;
}
