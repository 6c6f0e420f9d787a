#!/usr/bin/env bash
# The dracut module without dracut: module-setup.sh with dracut's install functions stubbed
# (what lands in a systemd-based and in a script-based initramfs), and fde-unlock.sh with a
# stub agent and stub power tools (what each exit status of the agent leads to).
#
# The dracut stubs and variables are used by the sourced module-setup.sh; the stubs written
# with printf expand their $ when they run.
# shellcheck disable=SC2034,SC2317,SC2016
set -uo pipefail
module_dir=$(cd "$(dirname "$0")/../../guest-agent/dracut" && pwd)
work=$(mktemp -d /tmp/fde-dracut-test-XXXXXX)
trap 'rm -rf "$work"' EXIT
passed=0
failed=0

expect() {  # expect NAME COMMAND...
  local name=$1
  shift
  if "$@"; then
    passed=$((passed + 1))
  else
    echo "FAILED: $name"
    failed=$((failed + 1))
  fi
}
has_line() { grep -qxF -- "$2" "$1"; }
lacks() { ! grep -qF -- "$2" "$1"; }

# ---- module-setup.sh -------------------------------------------------------------------
printf '#!/bin/sh\nexit 0\n' > "$work/fde-agent"
chmod 0755 "$work/fde-agent"
printf 'image_id = web\nca_file = %s/ca.pem\nverifier = https://10.0.0.1\n' "$work" > "$work/agent.conf"
echo "CA" > "$work/ca.pem"

module_setup() {  # module_setup yes|no OUTPUT [AGENT CONFIG]: run check, depends, installkernel, install
  local systemd=$1 out=$2 agent=${3:-$work/fde-agent} config=${4:-$work/agent.conf}
  (
    initdir=$work/initdir-$systemd-$(basename "$out")
    mkdir -p "$initdir"
    moddir=$module_dir
    systemdsystemunitdir=/usr/lib/systemd/system
    systemdutildir=/usr/lib/systemd
    export FDE_AGENT_BINARY=$agent FDE_AGENT_CONFIG=$config
    inst_simple() { echo "inst_simple $*"; }
    inst_multiple() { echo "inst_multiple $*"; }
    inst_libdir_file() { echo "inst_libdir_file $*"; }
    inst_script() { echo "inst_script $*"; }
    inst_hook() { echo "inst_hook $*"; }
    ln_r() { echo "ln_r $*"; }
    instmods() { echo "instmods $*"; }
    require_binaries() { return 0; }
    derror() { echo "derror $*"; }
    dinfo() { echo "dinfo $*"; }
    dracut_module_included() { [ "$1" = systemd ] && [ "$systemd" = yes ]; }
    # shellcheck source=/dev/null
    . "$module_dir/module-setup.sh"
    check
    echo "check=$?"
    echo "depends=$(depends)"
    installkernel
    install
    echo "install=$?"
  ) > "$out" 2>&1
}

module_setup yes "$work/systemd.out"
module_setup no "$work/script.out"
for flavour in systemd script; do
  out=$work/$flavour.out
  expect "$flavour: check asks to be added explicitly" has_line "$out" "check=255"
  expect "$flavour: depends on crypt, dm and network" has_line "$out" "depends=crypt dm network"
  expect "$flavour: install succeeds" has_line "$out" "install=0"
  expect "$flavour: installs the agent" has_line "$out" "inst_simple $work/fde-agent /usr/sbin/fde-agent"
  expect "$flavour: installs the configuration" has_line "$out" "inst_simple $work/agent.conf /etc/fde/agent.conf"
  expect "$flavour: installs the CA the configuration names" has_line "$out" "inst_simple $work/ca.pem $work/ca.pem"
  expect "$flavour: installs cryptsetup" grep -q "^inst_multiple cryptsetup" "$out"
  expect "$flavour: installs libgcc_s for Argon2 keyslots" has_line "$out" "inst_libdir_file libgcc_s.so*"
  expect "$flavour: installs dm-crypt" has_line "$out" "instmods dm_crypt"
  expect "$flavour: installs the unlock script" \
    has_line "$out" "inst_script $module_dir/fde-unlock.sh /usr/libexec/fde-agent/fde-unlock"
  expect "$flavour: installs the kernel arguments (network, no shell)" \
    has_line "$out" "inst_simple $module_dir/fde-agent-cmdline.conf /etc/cmdline.d/90fde-agent.conf"
  expect "$flavour: checks the root before switching to it" \
    has_line "$out" "inst_hook pre-pivot 10 $module_dir/fde-verify-root.sh"
done
expect "systemd: installs the unit" \
  has_line "$work/systemd.out" "inst_simple $module_dir/fde-agent.service /usr/lib/systemd/system/fde-agent.service"
expect "systemd: wants the unit from initrd.target" grep -q "^ln_r .*initrd.target.wants/fde-agent.service" "$work/systemd.out"
expect "systemd: no initqueue hook" lacks "$work/systemd.out" "inst_hook initqueue"
expect "script: runs from initqueue/settled" \
  has_line "$work/script.out" "inst_hook initqueue/settled 40 $module_dir/fde-agent-settled.sh"
expect "script: no systemd unit" lacks "$work/script.out" "fde-agent.service"
expect "script: the main loop waits for the agent" \
  has_line "$work/script.out" "inst_hook initqueue/finished 40 $module_dir/fde-agent-finished.sh"
conf=$module_dir/fde-agent-cmdline.conf
for arg in rd.neednet=1 rd.shell=0 rd.emergency=poweroff; do
  expect "kernel arguments: $arg" grep -qw -- "$arg" "$conf"
done
expect "kernel arguments: one line, no comments (dracut reads every word as an argument)" \
  test "$(grep -c . "$conf")" = 1 -a -z "$(grep '#' "$conf")"

# No agent on the build host (an image fde-image will encrypt): the runtime pieces only.
module_setup no "$work/unconfigured.out" "$work/absent-agent" "$work/absent.conf"
out=$work/unconfigured.out
expect "unconfigured: check asks to be added explicitly" has_line "$out" "check=255"
expect "unconfigured: install succeeds" has_line "$out" "install=0"
expect "unconfigured: no agent, configuration or CA copied" lacks "$out" "/usr/sbin/fde-agent"
expect "unconfigured: says fde-image adds the agent" grep -q "^dinfo .*fde-image adds it" "$out"
expect "unconfigured: installs cryptsetup" grep -q "^inst_multiple cryptsetup" "$out"
expect "unconfigured: installs dm-crypt" has_line "$out" "instmods dm_crypt"
expect "unconfigured: installs qemu_fw_cfg (the platform is chosen later)" has_line "$out" "instmods qemu_fw_cfg"
expect "unconfigured: runs from initqueue/settled" \
  has_line "$out" "inst_hook initqueue/settled 40 $module_dir/fde-agent-settled.sh"
expect "unconfigured: keeps the main loop going until the agent is done" \
  has_line "$out" "inst_hook initqueue/finished 40 $module_dir/fde-agent-finished.sh"
expect "configured tsi: no qemu_fw_cfg" lacks "$work/script.out" "instmods qemu_fw_cfg"
# Half a configuration is refused rather than silently treated as "fde-image adds it".
module_setup no "$work/half.out" "$work/fde-agent" "$work/absent.conf"
expect "an agent without a configuration fails the check" has_line "$work/half.out" "check=1"

rm -f "$work/ca.pem"
module_setup no "$work/no-ca.out"
expect "a configuration whose CA is missing fails the build" has_line "$work/no-ca.out" "install=1"

# The unit is ordered before the passphrase prompts and the root mount, after the network.
unit=$module_dir/fde-agent.service
expect "unit: before cryptsetup-pre.target and sysroot.mount" \
  grep -q "^Before=cryptsetup-pre.target cryptsetup.target initrd-root-device.target sysroot.mount$" "$unit"
expect "unit: after the network" grep -q "^After=.*network-online.target" "$unit"
expect "unit: fails closed" grep -q "^FailureAction=poweroff$" "$unit"

# ---- fde-unlock.sh ---------------------------------------------------------------------
# A copy with its fixed paths pointed into $work; stubs on PATH record what they are asked.
mkdir -p "$work/bin"
for tool in poweroff systemctl; do
  printf '#!/bin/sh\necho "%s $*" >> "%s/actions"\n' "$tool" "$work" > "$work/bin/$tool"
done
# cryptsetup records its arguments and what it read on stdin, and exits with prompt-exit.
cat > "$work/bin/cryptsetup" <<EOF
#!/bin/sh
echo "cryptsetup \$*" >> "$work/actions"
[ -t 0 ] || { read -r line; echo "stdin \$line" >> "$work/actions"; }
exit \$(cat "$work/prompt-exit")
EOF
# The endless wait after a failed power-off ends the test run instead.
printf '#!/bin/sh\necho "sleep $*" >> "%s/actions"\nkill -TERM $PPID\n' "$work" > "$work/bin/sleep"
cat > "$work/agent-stub" <<EOF
#!/bin/sh
echo "agent \$*" >> "$work/actions"
case "\$*" in
  *--resolve-volume*) echo "/dev/vdz2 luks-test"; exit 0 ;;
  *--check-mapping*) exit \$(cat "$work/check-exit") ;;
esac
exit \$(cat "$work/agent-exit")
EOF
printf '#!/bin/sh\necho "ask-password $*" >> "%s/actions"\necho host-typed-passphrase\n' "$work" > "$work/ask-password"
chmod 0755 "$work"/bin/* "$work/agent-stub" "$work/ask-password"
sed -e "s|^state=.*|state=$work/state|" -e "s|^agent=.*|agent=$work/agent-stub|" \
    -e "s|^systemd_run_dir=.*|systemd_run_dir=$work/systemd-run|" \
    -e "s|^sysrq_trigger=.*|sysrq_trigger=$work/sysrq|" -e "s|^console=.*|console=$work/console|" \
    -e "s|^ask_password_tools=.*|ask_password_tools=\"/nonexistent $work/ask-password\"|" \
    -e "s|^mountinfo=.*|mountinfo=$work/mountinfo|" -e "s|^sys_block=.*|sys_block=$work/sys-block|" \
    "$module_dir/fde-unlock.sh" > "$work/fde-unlock"
chmod 0755 "$work/fde-unlock"

unlock() {  # unlock AGENT-EXIT systemd|script [PROMPT-EXIT]
  rm -rf "$work/state" "$work/actions" "$work/sysrq" "$work/systemd-run"
  [ "$2" = systemd ] && mkdir -p "$work/systemd-run"
  echo "$1" > "$work/agent-exit"
  echo "${3:-0}" > "$work/prompt-exit"
  { PATH=$work/bin:$PATH timeout 20 "$work/fde-unlock"; echo $? > "$work/status"; } 2>/dev/null
  touch "$work/actions"
}
status_is() { [ "$(cat "$work/status")" = "$1" ]; }
done_marked() { [ -e "$work/state/done" ]; }
not_done() { [ ! -e "$work/state/done" ]; }
sysrq_is() { [ "$(cat "$work/sysrq" 2>/dev/null)" = "$1" ]; }
actions_are() { [ "$(cat "$work/actions")" = "$1" ]; }

unlock 0 script
expect "exit 0: the boot continues" status_is 0
expect "exit 0: the unlock is marked done" done_marked
expect "exit 0: nothing is powered off" actions_are "agent --config /etc/fde/agent.conf"
PATH=$work/bin:$PATH "$work/fde-unlock" 2>/dev/null
expect "a second run does not start the agent again" actions_are "agent --config /etc/fde/agent.conf"

unlock 3 script
expect "exit 3 (script): poweroff -f, then sysrq" \
  actions_are "$(printf 'agent --config /etc/fde/agent.conf\npoweroff -f\nsleep 60')"
expect "exit 3 (script): sysrq o as the last resort" sysrq_is o
expect "exit 3 (script): not marked done" not_done
unlock 3 systemd
expect "exit 3 (systemd): systemctl poweroff" \
  actions_are "$(printf 'agent --config /etc/fde/agent.conf\nsystemctl --no-block poweroff')"
expect "exit 3 (systemd): the unit fails" status_is 1
for code in 1 2 5; do
  unlock "$code" systemd
  expect "exit $code: powers off too" grep -q "^systemctl --no-block poweroff$" "$work/actions"
done

# The prompt opens with the volume key in the kernel's table (--disable-keyring), where the
# pre-pivot check can compare it with volume_key_check.
open_args="open --type luks2 --disable-keyring --disable-external-tokens"
echo "typed-on-the-console" > "$work/console"
unlock 4 script 0
expect "exit 4 (script): cryptsetup asks for the resolved volume, key in the table" \
  grep -qx "cryptsetup $open_args --tries 1 /dev/vdz2 luks-test" "$work/actions"
expect "exit 4 (script): cryptsetup reads the console" grep -qx "stdin typed-on-the-console" "$work/actions"
expect "exit 4 (script): done once the prompt unlocked it" done_marked
unlock 4 script 1
expect "exit 4 (script): three tries" test "$(grep -c "^cryptsetup $open_args" "$work/actions")" = 3
expect "exit 4 (script): failed tries power off" grep -qx "poweroff -f" "$work/actions"
unlock 4 systemd 0
expect "exit 4 (systemd): systemd-ask-password asks" grep -qx "ask-password --timeout=0 Passphrase for /dev/vdz2:" "$work/actions"
expect "exit 4 (systemd): its answer goes to cryptsetup on stdin, key in the table" \
  grep -qx "cryptsetup $open_args /dev/vdz2 luks-test" "$work/actions"
expect "exit 4 (systemd): the passphrase is read from the pipe" grep -qx "stdin host-typed-passphrase" "$work/actions"
expect "exit 4 (systemd): done" done_marked

# Two instances (unit and initqueue hook of a systemd initramfs): the second waits for the
# first's result instead of running a second agent.
unlock 0 script
rm -f "$work/state/done" "$work/actions"
mkdir -p "$work/state/running"
( sleep_real=$(command -v sleep); "$sleep_real" 1; : > "$work/state/done" ) &
{ PATH=/usr/bin:/bin timeout 20 "$work/fde-unlock"; echo $? > "$work/status"; } 2>/dev/null
wait
touch "$work/actions"
expect "a second instance waits and does not run the agent" actions_are ""
expect "a second instance exits 0 once the first is done" status_is 0

# --verify-root: the filesystem at /sysroot must be the agent's dm-crypt mapping.
verify_root() {  # verify_root DEVNO-AT-SYSROOT DM-NAME DM-UUID [CHECK-MAPPING-EXIT]
  rm -rf "$work/sys-block" "$work/actions" "$work/sysrq"
  echo "${4:-0}" > "$work/check-exit"
  mkdir -p "$work/sys-block/dm-0/dm"
  echo "254:0" > "$work/sys-block/dm-0/dev"
  echo "$2" > "$work/sys-block/dm-0/dm/name"
  echo "$3" > "$work/sys-block/dm-0/dm/uuid"
  printf '22 1 0:21 / /proc rw - proc proc rw\n31 1 %s / /sysroot ro - ext4 /dev/x ro\n' "$1" > "$work/mountinfo"
  { PATH=$work/bin:$PATH timeout 20 "$work/fde-unlock" --verify-root /sysroot; echo $? > "$work/status"; } 2>/dev/null
  touch "$work/actions"
}
verify_root 254:0 luks-test CRYPT-LUKS2-0123-luks-test
expect "verify-root: the agent's mapping passes" status_is 0
expect "verify-root: the agent checks the mapping's key" grep -qx "agent --config /etc/fde/agent.conf --check-mapping" "$work/actions"
expect "verify-root: nothing is powered off" lacks "$work/actions" "poweroff"
verify_root 254:0 luks-test CRYPT-LUKS2-0123-luks-test 3
expect "verify-root: a mapping without the enrolled volume key powers off at once" grep -qx "poweroff -f" "$work/actions"
verify_root 253:16 luks-test CRYPT-LUKS2-0123-luks-test
expect "verify-root: another device at /sysroot powers off at once" grep -qx "poweroff -f" "$work/actions"
verify_root 254:0 other CRYPT-LUKS2-0123-other
expect "verify-root: a mapping with another name powers off" grep -qx "poweroff -f" "$work/actions"
verify_root 254:0 luks-test LVM-abc
expect "verify-root: a dm device that is not dm-crypt powers off" grep -qx "poweroff -f" "$work/actions"
mkdir -p "$work/systemd-run"
verify_root 253:16 luks-test CRYPT-LUKS2-0123-luks-test
expect "verify-root (systemd): no orderly shutdown, poweroff -f at once" grep -qx "poweroff -f" "$work/actions"
rm -rf "$work/systemd-run"

echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
