#!/bin/sh
# Test only: /usr/local/sbin/he-scenario in the systemd mode's Debian guest (test/system/systemd.sh),
# run by he-scenario.service after multi-user.target on every boot. It reports on the serial
# console with "@@HE:" lines (test/system/judge.mjs --mode systemd judges them) and counts the
# boots of this machine on its own disk. It decides nothing it reports: the judge does.
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
. /etc/he-scenario.conf
U=hyperenclave.service
RTLOG=/var/lib/hyperenclave/runtime-measurements.log
mkdir -p /var/lib/he-scenario
N=$(( $(cat /var/lib/he-scenario/boots 2>/dev/null || echo 0) + 1 ))
echo $N >/var/lib/he-scenario/boots
sync

b64() { # name file
  echo "@@HE:B64 BEGIN $1"; base64 -w 76 "$2"; echo "@@HE:B64 END $1"
}
pcrs() { # tag
  for bank in sha1 sha256 sha384; do
    for i in 0 1 2 3 4 5 6 7 $PCR $HAK_PCR; do
      f=/sys/class/tpm/tpm0/pcr-$bank/$i
      [ -r $f ] && echo "@@HE:PCR $1 $bank $i $(cat $f)"
    done
  done
}
# snapshot TAG: the unit's and multi-user.target's state, PCRs, CPUID on every CPU, the driver's
# state, the unit's journal of this boot (JSON), `hyperenclave status --json`, the runtime log.
snapshot() {
  t=$1
  systemctl show $U multi-user.target -p Id,ActiveState,SubState,Result,ExecMainStatus,ActiveEnterTimestampMonotonic,InactiveExitTimestampMonotonic \
    >/tmp/props 2>&1
  b64 props-$t /tmp/props
  pcrs $t
  c=0
  while [ $c -lt "$(nproc)" ]; do
    echo "@@HE:CPUID $t cpu$c $(taskset -c $c hectl cpuid 2>&1)"
    c=$((c + 1))
  done
  echo "@@HE:HECTL $t $(hectl status 2>&1)"
  journalctl -b 0 -u $U -o json --no-pager >/tmp/journal 2>&1
  b64 journal-$t /tmp/journal
  hyperenclave --platform linux --json status >/tmp/status 2>/tmp/status.err
  echo "@@HE:RC status-$t $? $(head -1 /tmp/status.err)"
  b64 status-$t /tmp/status
  [ -f $RTLOG ] && b64 runtime-$t $RTLOG
  [ -f /var/lib/hyperenclave/boot-state.json ] && b64 bootstate-$t /var/lib/hyperenclave/boot-state.json
  return 0
}

echo "@@HE:BOOTED boot=$N kernel=$(uname -r) cpus=$(nproc) pid1=$(cat /proc/1/comm) system=$(systemctl is-system-running 2>&1)"
# The driver's own line with its time since boot, and multi-user.target's time (both CLOCK_MONOTONIC).
journalctl -b 0 -k -o json --no-pager 2>/dev/null | grep '"hyperenclave: \(enabled\|ready\)' >/tmp/kmsg
b64 kmsg-b$N /tmp/kmsg
echo "@@HE:MODULE b$N reserved_base=$(cat /sys/module/hyperenclave/parameters/reserved_base 2>&1) pcr=$(cat /sys/module/hyperenclave/parameters/pcr 2>&1) modules-load=$(systemctl is-active systemd-modules-load.service 2>&1)"
snapshot b$N

case $N in
1)
  systemd-analyze security $U --no-pager >/tmp/security 2>&1
  b64 security /tmp/security
  # start on the active unit: nothing to do, nothing extended
  systemctl start $U; echo "@@HE:RC start-again $?"
  pcrs b1-start-again
  # stop runs `hyperenclave disable` (ExecStop): every CPU handed back, the PCR capped
  systemctl stop $U; echo "@@HE:RC stop $?"
  snapshot b1-stopped
  # start again in the same boot: the image is loaded (and measured) again, the sealed root unseals
  systemctl start $U; echo "@@HE:RC start-after-stop $?"
  snapshot b1-restarted
  echo "@@HE:REBOOT 1"
  systemctl start --no-block --job-mode=replace-irreversibly reboot.target
  ;;
2)
  journalctl -b -1 -u $U -o json --no-pager >/tmp/prev 2>&1
  b64 journal-prev-b2 /tmp/prev
  # the next boot finds an image signed by another key than /etc/hyperenclave/image-signer.pem
  cp /opt/he/wrong-signer.img /lib/firmware/hyperenclave/hyperenclave.img
  sync
  echo "@@HE:REBOOT 2"
  systemctl start --no-block --job-mode=replace-irreversibly reboot.target
  ;;
3)
  echo "@@HE:SYSTEM b3 $(systemctl is-system-running --wait 2>&1) multi-user=$(systemctl is-active multi-user.target 2>&1) unit=$(systemctl is-failed $U 2>&1)"
  journalctl -b 0 -p err -u $U -o cat --no-pager >/tmp/err 2>&1
  b64 journal-err-b3 /tmp/err
  journalctl -b 0 -p err -u $U -o json --no-pager >/tmp/errj 2>&1
  b64 journal-errjson-b3 /tmp/errj
  journalctl -p info -u $U -o json --no-pager >/tmp/all 2>&1
  b64 journal-all-b3 /tmp/all
  journalctl -p err -u $U -o json --no-pager >/tmp/allerr 2>&1
  b64 journal-allerr-b3 /tmp/allerr
  # the image missing: the unit started again fails with its own line
  rm -f /lib/firmware/hyperenclave/hyperenclave.img
  systemctl start $U; echo "@@HE:RC start-missing $?"
  snapshot b3-missing
  journalctl -b 0 -p err -u $U -o json --no-pager >/tmp/errj 2>&1
  b64 journal-errjson-b3-missing /tmp/errj
  echo "@@HE:DONE"
  systemctl start --no-block --job-mode=replace-irreversibly poweroff.target
  ;;
*)
  echo "@@HE:DONE unexpected boot $N"
  systemctl start --no-block --job-mode=replace-irreversibly poweroff.target
  ;;
esac
