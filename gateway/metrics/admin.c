/*
 * The admin listener (`admin.listen`): what HAProxy's stats page and
 * Envoy's admin port are to their users.
 *
 *   GET /metrics   Prometheus text, summed over every live worker (and
 *                  the counters of the ones that have gone) from the
 *                  shared metrics segment (metrics.c)
 *   GET /status    the same numbers as JSON, with the config generation
 *                  and worker pids
 *   GET /          a small self-contained HTML page that shows /status
 *   DELETE /cache?prefix=/p/   drops the cached answers under a path
 *                  and refreshes itself every second
 *
 * Any worker answers: the numbers are in shared memory, so it does not
 * matter which one accepted the connection.  It binds where the config
 * says; keep it on loopback or a private network (it has no auth).
 */
#include <string.h>

#include "gateway/cache/cache.h"
#include "gateway/gateway.h"
#include "gateway/metrics/metrics.h"
#include "worker/loopwatch.h"
#include "worker/worker.h"

static const char page[] =
"<!doctype html>\n"
"<html lang=\"en\"><head><meta charset=\"utf-8\">\n"
"<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n"
"<title>agate status</title>\n"
"<style>\n"
"body{font:14px/1.4 system-ui,sans-serif;margin:1.5em;color:#222}\n"
"h1{font-size:1.4em;margin:0 0 .2em}h2{font-size:1.1em;margin:1.4em 0 .4em}\n"
"table{border-collapse:collapse;min-width:40em}\n"
"th,td{padding:.25em .7em;border-bottom:1px solid #ddd;text-align:right}\n"
"th:first-child,td:first-child{text-align:left}\n"
"th{background:#f3f3f3}.bad{color:#b00;font-weight:bold}\n"
".ok{color:#070}#err{color:#b00}small{color:#666}\n"
"</style></head><body>\n"
"<h1>agate</h1>\n"
"<div id=\"summary\">loading&hellip;</div><div id=\"err\"></div>\n"
"<h2>Routes</h2><table id=\"routes\"></table>\n"
"<h2>Upstreams</h2><table id=\"upstreams\"></table>\n"
"<h2>Workers</h2><table id=\"workers\"></table>\n"
"<h2>Offload jobs</h2><table id=\"offload\"></table>\n"
"<p><small>Refreshes every second from <a href=\"/status\">/status</a>; "
"Prometheus: <a href=\"/metrics\">/metrics</a>.</small></p>\n"
"<script>\n"
"'use strict';\n"
"let last=null,lastT=0;\n"
"function esc(s){return String(s).replace(/[&<>\"]/g,c=>({'&':'&amp;',"
"'<':'&lt;','>':'&gt;','\"':'&quot;'}[c]));}\n"
"function table(id,head,rows){const t=document.getElementById(id);"
"t.innerHTML='<tr>'+head.map(h=>'<th>'+esc(h)+'</th>').join('')+'</tr>'+"
"rows.map(r=>'<tr>'+r.map(c=>'<td>'+c+'</td>').join('')+'</tr>').join('');}\n"
"function rate(now,prev,key,dt){if(!prev||!dt)return '-';"
"const v=(now-prev)/dt;return v.toFixed(1);}\n"
"function render(s){const t=Date.now()/1000,dt=last?t-lastT:0;"
"const pr={};if(last)last.routes.forEach(r=>pr[r.path]=r);\n"
"document.getElementById('summary').innerHTML='version '+esc(s.version)+"
"', supervisor pid '+s.pid+', up '+s.uptime_s+' s, config generation '+"
"s.generation+', reloads '+s.reloads.ok+' ok / '+s.reloads.failed+"
"' failed, '+s.workers.length+' workers';\n"
"table('routes',['route','to','requests','req/s','2xx','3xx','4xx','5xx',"
"'mean ms'],s.routes.map(r=>[esc(r.path),esc(r.target),"
"'<span class=\"n\">'+r.requests+'</span>',"
"rate(r.requests,pr[r.path]&&pr[r.path].requests,'',dt),r['2xx'],r['3xx'],"
"r['4xx'],r['5xx']>0?'<span class=\"bad\">'+r['5xx']+'</span>':0,"
"r.mean_ms.toFixed(2)]));\n"
"const ups=[];s.upstreams.forEach(u=>u.servers.forEach((v,i)=>ups.push(["
"i?'':esc(u.name),esc(v.url),v.healthy?'<span class=\"ok\">up</span>':"
"'<span class=\"bad\">down</span>',v.breaker=='closed'?'closed':"
"'<span class=\"bad\">'+v.breaker+'</span>',v['2xx'],v['4xx'],v['5xx'],"
"v.connect_failure+v.timeout+v.reset+v.invalid,i?'':u.retries,"
"i?'':u.in_flight,i?'':u.queue_depth])));\n"
"table('upstreams',['upstream','server','health','breaker','2xx','4xx',"
"'5xx','failed tries','retries','in flight','queued'],ups);\n"
"table('workers',['pid','generation','slot','connections','in flight',"
"'tunnels','requests','loop lag ms','lag p99 ms','slow callbacks',"
"'offload queued','offload running'],s.workers.map(w=>[w.pid,w.generation,"
"w.index,w.connections,w.in_flight,w.tunnels,w.requests,"
"w.loop_lag_mean_ms.toFixed(2),w.loop_lag_p99_ms,w.slow_callbacks>0?"
"'<span class=\"bad\">'+w.slow_callbacks+'</span>':0,w.offload_queued,"
"w.offload_running]));\n"
"table('offload',['kind','ok','failed','timed out','helper lost'],"
"Object.keys(s.offload).map(k=>{const o=s.offload[k];return [esc(k),o.ok,"
"o.bad_input+o.failed+o.unknown_kind,o.timeout,o.helper_lost+o.stopped];}));\n"
"last=s;lastT=t;}\n"
"async function tick(){try{const r=await fetch('/status',{cache:'no-store'});"
"render(await r.json());document.getElementById('err').textContent='';}"
"catch(e){document.getElementById('err').textContent='cannot reach agate: '+e;}"
"setTimeout(tick,1000);}\n"
"tick();\n"
"</script></body></html>\n";

void
admin_handle(struct request *r)
{
	const char *p = r->head.path;
	size_t n = r->head.path_len;
	struct buf b = { 0 };

	/* The loop is answering the admin listener, not traffic. */
	loopwatch_relabel(LW_ADMIN);
	if (n == 6 && memcmp(p, "/cache", 6) == 0) {
		if (!http_token_eq(r->head.method, r->head.method_len,
		    "DELETE"))
			req_error(r, 405, "/cache answers DELETE ?prefix=",
			    "Allow: DELETE\r\n");
		else
			cache_purge(r);
		return;
	}
	if (!http_token_eq(r->head.method, r->head.method_len, "GET") &&
	    !http_token_eq(r->head.method, r->head.method_len, "HEAD")) {
		req_error(r, 405, "the admin listener answers GET only",
		    "Allow: GET, HEAD\r\n");
		return;
	}
	if (n == 8 && memcmp(p, "/metrics", 8) == 0) {
		metrics_prometheus(&b, worker.cfg);
		cache_metrics(&b);
		req_respond(r, 200, "text/plain; version=0.0.4; charset=utf-8",
		    b.data ? b.data : "", b.len, "Cache-Control: no-store\r\n");
	} else if (n == 7 && memcmp(p, "/status", 7) == 0) {
		metrics_status_json(&b, worker.cfg);
		req_respond(r, 200, "application/json", b.data, b.len,
		    "Cache-Control: no-store\r\n");
	} else if (n == 1 && *p == '/') {
		req_respond(r, 200, "text/html; charset=utf-8", page,
		    sizeof(page) - 1, "Cache-Control: no-store\r\n");
	} else
		req_error(r, 404, "the admin listener serves /, /status and "
		    "/metrics", NULL);
	buf_free(&b);
}
