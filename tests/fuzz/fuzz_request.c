/*
 * Fuzz target: the client-side request parser.  The input is what a
 * client could send: it goes through the head scanner and parser, the
 * response-head parser (what an upstream could send), the PROXY protocol
 * parser, and, after the head, the chunked-body decoder fed in pieces
 * whose sizes come from the input itself.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "worker/http_parse.h"
#include "worker/proxy_proto.h"

int	LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char *buf = malloc(size + 1);
	struct http_head h;
	struct http_resp_head rh;
	struct http_chunked ch;
	struct sockaddr_storage ss;
	size_t scan = 0, end, used, off, piece, dlen;
	const char *why, *d;
	int status;

	if (buf == NULL)
		return 0;
	memcpy(buf, data, size);
	buf[size] = '\0';
	memset(&ss, 0, sizeof(ss));
	(void)proxy_proto_parse(buf, size, &ss, &used);
	(void)http_head_too_big(buf, size, 16384);
	end = http_head_end(buf, size, &scan);
	if (end > 0) {
		memset(&h, 0, sizeof(h));
		(void)http_parse_head(buf, end, &h, &status, &why);
		memset(&rh, 0, sizeof(rh));
		(void)http_parse_response_head(buf, end, &rh);
		/* The rest as a chunked body, in pieces of 1..16 bytes. */
		http_chunked_init(&ch);
		piece = size > 0 ? (size_t)(data[0] % 16) + 1 : 1;
		for (off = end; off < size; ) {
			size_t n = size - off < piece ? size - off : piece;
			enum http_chunk_result rc = http_chunked_next(&ch,
			    buf + off, n, 1 << 20, &used, &d, &dlen);

			if (rc == CHUNK_ERROR || rc == CHUNK_DONE)
				break;
			if (used == 0 && rc == CHUNK_AGAIN) {
				if (n == size - off)
					break;
				piece++;	/* needs a longer piece */
				continue;
			}
			off += used;
		}
	}
	free(buf);
	return 0;
}
