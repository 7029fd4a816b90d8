#!/usr/bin/env bash
# iSCSI login security against real initiators (libiscsi's iscsi-inq / iscsi-ls, luna-img's own
# iscsi:// client): one-way CHAP admits the right user and secret and refuses a wrong secret or
# no CHAP at all (status 0x0201); mutual CHAP proves the target to the initiator (a wrong target
# secret is caught by the initiator); the initiators list refuses other initiators (0x0202) and
# hides the target from their SendTargets; discovery sessions need the [discovery] CHAP
# credentials when they are set.
source "$(dirname "$0")/lib.sh"
need_luna_img iscsi-inq iscsi-ls iscsi-readcapacity16 timeout
cd "$WORK"

PORT=$(free_port)
P=127.0.0.1:$PORT
ONE=iqn.2026-12.org.luna.test:one$$
MUTUAL=iqn.2026-12.org.luna.test:mutual$$
INQ=iqn.2007-10.com.github:sahlberg:libiscsi:iscsi-inq
truncate -s 16M disk.img
cat >lunad.ini <<INI
[server]
iscsi_listen = $P
[export a]
path = $WORK/disk.img
[discovery]
chap_user = disco
chap_secret = discosecret12
[target $ONE]
lun.0 = a
chap_user = alice
chap_secret = alicesecret12
[target $MUTUAL]
lun.0 = a
chap_user = bob
chap_secret = bobsecret1234
mutual_chap_user = target
mutual_chap_secret = targetsecret9
initiators = $INQ
INI
luna_start --config lunad.ini

# login_ok URL: INQUIRY through the login succeeds.  login_fails URL PATTERN: it fails, saying PATTERN.
login_ok() {
  timeout 20 iscsi-inq "$1" >inq.out 2>&1 || { cat inq.out; fail "login to $1 failed"; }
  grep -q "Vendor:LUNA" inq.out || { cat inq.out; fail "no INQUIRY data through $1"; }
}
login_fails() {
  if timeout 20 iscsi-inq "$1" >inq.out 2>&1; then fail "login to $1 succeeded"; fi
  grep -q "$2" inq.out || { cat inq.out; fail "login to $1: expected '$2'"; }
}

login_ok "iscsi://alice%alicesecret12@$P/$ONE/0"
login_fails "iscsi://alice%wrongsecret1@$P/$ONE/0" "Authentication failure(513)"
login_fails "iscsi://mallory%alicesecret12@$P/$ONE/0" "Authentication failure(513)"
login_fails "iscsi://$P/$ONE/0" "Authentication failure(513)"
grep -q "wrong CHAP name or secret" "$LUNAD_LOG" || fail "the refusal is not logged with its reason"
pass "one-way CHAP: the right secret logs in; a wrong secret, a wrong user or no CHAP get 0x0201"

login_ok "iscsi://bob%bobsecret1234@$P/$MUTUAL/0?target_user=target&target_password=targetsecret9"
login_fails "iscsi://bob%bobsecret1234@$P/$MUTUAL/0?target_user=target&target_password=notthetarget" \
  "Invalid CHAP_R response from the target"
pass "mutual CHAP: the target proves its secret; a wrong target secret is caught by the initiator"

if timeout 20 iscsi-readcapacity16 "iscsi://bob%bobsecret1234@$P/$MUTUAL/0?target_user=target&target_password=targetsecret9" \
  >rc.out 2>&1; then
  fail "an initiator outside the initiators list logged in"
fi
grep -q "Authorization failure(514)" rc.out || { cat rc.out; fail "expected an authorization failure (0x0202)"; }
pass "initiators list: another initiator name gets 0x0202"

timeout 20 iscsi-ls "iscsi://disco%discosecret12@$P" >ls.out 2>&1 || { cat ls.out; fail "discovery with CHAP failed"; }
grep -q "Target:$ONE Portal:$P,1" ls.out || { cat ls.out; fail "discovery does not list $ONE"; }
if grep -q "$MUTUAL" ls.out; then fail "discovery shows $MUTUAL to an initiator outside its list"; fi
if timeout 20 iscsi-ls "iscsi://$P" >ls.out 2>&1; then fail "discovery without CHAP succeeded"; fi
pass "discovery: CHAP required; a target is hidden from initiators outside its list"

"$LUNA_IMG" info "iscsi://alice%alicesecret12@$P/$ONE/0" >info.out 2>&1 || { cat info.out; fail "luna-img with CHAP"; }
grep -q "virtual size: 16 MiB" info.out || { cat info.out; fail "luna-img info: wrong size"; }
pass "luna-img's iscsi:// client logs in with CHAP"
luna_stop
