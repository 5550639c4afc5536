-- pnbridge_wait.lua USER DOMAIN SECONDS: wait until USER@DOMAIN has registered (asked of
-- sofia_contact every 250 ms, at most SECONDS), then set pnbridge_contact to its dial
-- string ("" when the time is up or the caller has hung up). NOT RUN here: see pnbridge.xml.
local user, domain, seconds = argv[1], argv[2], tonumber(argv[3]) or 20
local api = freeswitch.API()
local contact = ""
for _ = 1, seconds * 4 do
  if not session:ready() then break end
  local found = api:execute("sofia_contact", user .. "@" .. domain)
  if found ~= "" and not found:find("^error/") then
    contact = found
    break
  end
  session:sleep(250)
end
session:setVariable("pnbridge_contact", contact)
