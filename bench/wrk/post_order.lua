-- POST /api/orders as one plain user: BENCH_TOKEN is its access token.
package.path = os.getenv("BENCH_WRK_DIR") .. "/?.lua;" .. package.path
local report = require("report")
wrk.method = "POST"
wrk.body = os.getenv("BENCH_ORDER_BODY")
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer " .. os.getenv("BENCH_TOKEN")
done = report.done
