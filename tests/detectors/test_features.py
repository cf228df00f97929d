from detectors.features import (
    describe,
    dest_feature,
    kind_of,
    listen_feature,
    normalise_cmdline,
    proc_feature,
    split_state,
)


def test_cmdline_numbers_hashes_and_temp_names_are_normalised() -> None:
    a = normalise_cmdline("ffmpeg -i /scratch/job-123/in.mov /tmp/tmpab12cd9x.mp4 --id 9f86d081884c7d65")
    b = normalise_cmdline("ffmpeg -i /scratch/job-98/in.mov   /tmp/tmpzz99qq1k.mp4 --id 0c7d659f86d08188")
    assert a == b
    assert "123" not in a and "#" in a


def test_process_identity_keeps_exe_and_user() -> None:
    assert proc_feature("/tmp/.x/xmrig", "xmrig -o pool:3333", "www-data") != proc_feature(
        "/tmp/.x/xmrig", "xmrig -o pool:3333", "root"
    )
    assert kind_of(proc_feature("/bin/ls", "ls", "root")) == "proc"


def test_destinations_aggregate_to_stable_networks() -> None:
    assert (
        dest_feature("tcp", "10.0.5.21", 5432) == dest_feature("tcp6", "10.0.5.99", 5432) == "dest:tcp/5432@10.0.5.0/24"
    )
    assert dest_feature("tcp", "151.101.1.69", 443) == "dest:tcp/443@public"
    assert dest_feature("tcp", "185.71.65.9", 4444) == "dest:tcp/4444@185.71.0.0/16"
    assert dest_feature("tcp", "::ffff:10.0.5.3", 5432) == "dest:tcp/5432@10.0.5.0/24"
    assert dest_feature("tcp", "10.0.5.21", 50123).startswith("dest:tcp/eph@")


def test_listeners_keep_scope_and_hide_ephemeral_ports() -> None:
    assert listen_feature("tcp", 22, "0.0.0.0", "/usr/sbin/sshd") == "listen:tcp/22@any|/usr/sbin/sshd"
    assert listen_feature("tcp", 3000, "127.0.0.1", "node") == "listen:tcp/3000@local|node"
    assert listen_feature("tcp", 45000, "0.0.0.0", "java") == "listen:tcp/eph@any|java"


def test_state_features_split_and_describe() -> None:
    assert split_state("cfg:sshd.permitrootlogin=yes") == ("cfg", "sshd.permitrootlogin", "yes")
    assert split_state("pkg:openssh-server=1:9.6p1") == ("pkg", "openssh-server", "1:9.6p1")
    assert split_state("mod:ext4") == ("mod", "ext4", "")
    assert "process /tmp/x run as root" in describe("proc:/tmp/x|x -a|root")


def test_sshd_connection_titles_lose_the_knocking_user_name() -> None:
    assert normalise_cmdline("sshd: oracle [priv]") == normalise_cmdline("sshd: admin [priv]") == "sshd: * [priv]"
    assert normalise_cmdline("sshd: ubuntu@pts/0") == "sshd: *@session"
    assert normalise_cmdline("sshd: /usr/sbin/sshd -D [listener] 3 of 10-100 startups").startswith("sshd: /usr")
