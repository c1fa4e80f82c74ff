use std::collections::HashSet;
use std::fs;

use ablate_cache::{
    CachedEntry, HASH_SCHEME, InstanceKey, KeyInput, Lookup, Manifest, Metric, Origin, Store,
    VerifyMode,
};
use serde_json::json;

fn key_input(x: i64) -> KeyInput {
    KeyInput {
        scheme: HASH_SCHEME,
        op: "echo".into(),
        op_version: 1,
        params: serde_json::from_value(json!({ "value": x })).unwrap(),
        inputs: vec![],
        deps: vec![],
    }
}

fn manifest(input: &KeyInput) -> Manifest {
    Manifest {
        format: 0,
        key: input.key(),
        input: input.clone(),
        origin: Origin {
            pipeline: "p".into(),
            stage: "s".into(),
            label: "value=1".into(),
        },
        outputs: vec![],
        metrics: vec![Metric::new("value", 1.0), Metric::at_step("loss", 3, 0.5)],
        publish: vec![],
        started_at_us: 0,
        seconds: 0.1,
        device: "cpu".into(),
        host: "h".into(),
        ablate_version: "0".into(),
        status: Default::default(),
        checksum: None,
    }
}

fn put(store: &Store, x: i64, files: &[(&str, &[u8])]) -> InstanceKey {
    let input = key_input(x);
    let key = input.key();
    let tmp = store.begin(&key).unwrap();
    for (name, bytes) in files {
        let p = tmp.dir().join(name);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(p, bytes).unwrap();
    }
    tmp.commit(manifest(&input)).unwrap();
    key
}

/// Same size, other bytes, the old modification time put back: what the fast lookup trusts.
fn overwrite_keeping_mtime(file: &std::path::Path, bytes: &[u8]) {
    let mtime = fs::metadata(file).unwrap().modified().unwrap();
    assert_eq!(fs::metadata(file).unwrap().len(), bytes.len() as u64);
    fs::write(file, bytes).unwrap();
    fs::File::options()
        .write(true)
        .open(file)
        .unwrap()
        .set_modified(mtime)
        .unwrap();
}

#[test]
fn commit_then_lookup_hits_with_hashed_outputs() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    assert!(dir.path().join("CACHEDIR.TAG").exists());
    let key = put(
        &store,
        1,
        &[("a.txt", b"hello"), ("sub/b.bin", b"\x00\x01")],
    );
    match store.lookup(&key) {
        Lookup::Hit(m) => {
            let paths: Vec<_> = m.outputs.iter().map(|o| o.path.as_str()).collect();
            assert_eq!(paths, ["a.txt", "sub/b.bin"]);
            assert_eq!(
                m.outputs[0].sha256,
                ablate_cache::Digest::of_bytes(b"hello")
            );
            assert_eq!(m.key, key);
        }
        other => panic!("expected a hit, got {other:?}"),
    }
    assert!(matches!(store.lookup(&key_input(2).key()), Lookup::Miss));
    // Nothing is left in tmp after a commit.
    assert_eq!(fs::read_dir(dir.path().join("v1/tmp")).unwrap().count(), 0);
}

#[test]
fn dropped_temp_entry_leaves_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let key = key_input(1).key();
    {
        let tmp = store.begin(&key).unwrap();
        fs::write(tmp.dir().join("half"), b"written").unwrap();
    }
    assert!(matches!(store.lookup(&key), Lookup::Miss));
    assert_eq!(fs::read_dir(dir.path().join("v1/tmp")).unwrap().count(), 0);
}

#[test]
fn torn_entry_is_invalid_and_replaced_on_commit() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let key = put(&store, 1, &[("a.txt", b"hello")]);
    fs::remove_file(store.entry_dir(&key).join("manifest.json")).unwrap();
    assert!(matches!(store.lookup(&key), Lookup::Invalid(why) if why.contains("torn")));
    let again = put(&store, 1, &[("a.txt", b"hello")]);
    assert_eq!(again, key);
    assert!(matches!(store.lookup(&key), Lookup::Hit(_)));
}

#[test]
fn a_second_writer_keeps_the_first_unless_it_replaces() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let key = put(&store, 1, &[("out.txt", b"first")]);
    let out = |store: &Store| fs::read(store.entry_dir(&key).join("out.txt")).unwrap();
    let write = |bytes: &[u8], value: f64| {
        let tmp = store.begin(&key).unwrap();
        fs::write(tmp.dir().join("out.txt"), bytes).unwrap();
        let mut m = manifest(&key_input(1));
        m.metrics = vec![Metric::new("value", value)];
        (tmp, m)
    };
    // Another writer won the race: its entry stays, and commit returns its manifest.
    let (tmp, m) = write(b"second", 2.0);
    let kept = tmp.commit(m).unwrap();
    assert_eq!(
        kept.metrics,
        vec![Metric::new("value", 1.0), Metric::at_step("loss", 3, 0.5)]
    );
    assert_eq!(out(&store), b"first");
    // A forced recomputation replaces it.
    let (tmp, m) = write(b"third", 3.0);
    let replaced = tmp.commit_replacing(m).unwrap();
    assert_eq!(replaced.metrics, vec![Metric::new("value", 3.0)]);
    assert_eq!(out(&store), b"third");
    let Lookup::Hit(m) = store.lookup(&key) else {
        panic!("the replaced entry is valid");
    };
    assert_eq!(m.metrics, vec![Metric::new("value", 3.0)]);
    assert!(
        fs::read_dir(dir.path().join("v1/tmp"))
            .unwrap()
            .next()
            .is_none()
    );
}

#[test]
fn tampered_output_is_detected() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let key = put(&store, 1, &[("a.txt", b"hello")]);
    let file = store.entry_dir(&key).join("a.txt");
    // Same size, other bytes: caught by the mtime change, then the hash.
    std::thread::sleep(std::time::Duration::from_millis(20));
    fs::write(&file, b"HELLO").unwrap();
    assert!(matches!(store.lookup(&key), Lookup::Invalid(why) if why.contains("SHA-256")));
    // Other size: caught by the size alone.
    fs::write(&file, b"hello!").unwrap();
    assert!(matches!(store.lookup(&key), Lookup::Invalid(why) if why.contains("bytes")));
    // A garbled manifest.
    fs::write(store.entry_dir(&key).join("manifest.json"), b"{not json").unwrap();
    assert!(matches!(store.lookup(&key), Lookup::Invalid(why) if why.contains("parse")));
}

#[test]
fn full_verify_catches_what_mtime_hides() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let key = put(&store, 1, &[("a.txt", b"hello")]);
    let file = store.entry_dir(&key).join("a.txt");
    overwrite_keeping_mtime(&file, b"HELLO");
    assert!(matches!(
        store.verify(&key, VerifyMode::Fast),
        Lookup::Hit(_)
    ));
    assert!(matches!(
        store.verify(&key, VerifyMode::Full),
        Lookup::Invalid(_)
    ));
}

#[test]
fn manifest_of_another_key_is_invalid() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let k1 = put(&store, 1, &[]);
    let k2 = key_input(2).key();
    let d2 = store.entry_dir(&k2);
    fs::create_dir_all(d2.parent().unwrap()).unwrap();
    fs::create_dir_all(&d2).unwrap();
    fs::copy(
        store.entry_dir(&k1).join("manifest.json"),
        d2.join("manifest.json"),
    )
    .unwrap();
    assert!(matches!(store.lookup(&k2), Lookup::Invalid(why) if why.contains("another key")));
}

#[test]
fn non_finite_metric_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let input = key_input(1);
    let mut m = manifest(&input);
    m.metrics.push(Metric::new("loss", f64::NAN));
    let err = store.begin(&input.key()).unwrap().commit(m).unwrap_err();
    assert!(err.to_string().contains("loss"), "{err}");
    assert!(matches!(store.lookup(&input.key()), Lookup::Miss));
}

#[test]
fn lock_is_exclusive_until_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let key = key_input(1).key();
    let held = store.try_lock(&key).unwrap().expect("nobody holds it");
    assert!(store.try_lock(&key).unwrap().is_none());
    drop(held);
    assert!(store.try_lock(&key).unwrap().is_some());
}

/// `ablate status` lists what is computed now from the held locks' notes: the pipeline, the
/// instance and the program, for a variant that its own plan does not have (QA of #21).
#[test]
fn held_locks_list_their_holders_notes_and_not_the_released_ones() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let (a, b) = (key_input(1).key(), key_input(2).key());
    let held = store
        .try_lock_for(&a, "sweep", "train[lr=0.2]")
        .unwrap()
        .unwrap();
    held.note_program(4242);
    drop(store.try_lock(&b).unwrap().unwrap());
    let listed = store.held_locks();
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(listed[0].key, a);
    let note = listed[0].note.as_ref().unwrap();
    assert_eq!(note.pid, std::process::id());
    assert_eq!(note.pipeline.as_deref(), Some("sweep"));
    assert_eq!(note.instance.as_deref(), Some("train[lr=0.2]"));
    assert_eq!(note.program_pid, Some(4242));
    assert!(note.describe().starts_with(&format!(
        "ablate pid {}, program pid 4242 on ",
        std::process::id()
    )));
    // Probing took nothing: the key is still held, and free once released.
    assert!(store.try_lock(&a).unwrap().is_none());
    drop(held);
    assert!(store.held_locks().is_empty());
    // The next holder's shorter note leaves nothing of the last one's.
    let _gc = store.try_lock(&a).unwrap().unwrap();
    let note = store.lock_holder(&a).unwrap();
    assert_eq!((note.pipeline, note.program_pid), (None, None));
}

#[test]
fn failed_attempt_is_kept_for_inspection() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let key = key_input(1).key();
    let tmp = store.begin(&key).unwrap();
    fs::write(tmp.dir().join("stderr.log"), b"boom").unwrap();
    let kept = tmp.fail().unwrap();
    assert_eq!(fs::read(kept.join("stderr.log")).unwrap(), b"boom");
    assert!(matches!(store.lookup(&key), Lookup::Miss));
}

#[test]
fn gc_removes_leftovers_invalid_and_unkept_entries() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let keep = put(&store, 1, &[("a", b"1")]);
    let drop_me = put(&store, 2, &[("a", b"2")]);
    let torn = put(&store, 3, &[("a", b"3")]);
    fs::remove_file(store.entry_dir(&torn).join("manifest.json")).unwrap();
    // A temp dir of a writer that no longer exists (pid 0 is never a user process).
    fs::create_dir_all(dir.path().join(format!("v1/tmp/{}.0.7", keep.to_hex()))).unwrap();

    let report = store.gc(None, true).unwrap();
    assert_eq!((report.entries, report.leftovers), (1, 1));
    assert_eq!(store.keys().unwrap().len(), 3, "dry run removes nothing");

    store.gc(None, false).unwrap();
    assert_eq!(store.keys().unwrap(), {
        let mut v = vec![keep, drop_me];
        v.sort();
        v
    });
    let kept: HashSet<_> = [keep].into();
    store.gc(Some(&kept), false).unwrap();
    assert_eq!(store.keys().unwrap(), vec![keep]);
    assert_eq!(fs::read_dir(dir.path().join("v1/tmp")).unwrap().count(), 0);
}

#[test]
fn index_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let key = put(&store, 1, &[]);
    let mut index = store.load_index("p");
    assert!(index.instances.is_empty());
    index.instances.insert("s[value=1]".into(), key);
    store.save_index("p", &index).unwrap();
    assert_eq!(store.load_index("p").instances["s[value=1]"], key);
}

/// A no-op rerun of 10,000 instances parsed the whole run index to find nothing to add (#21):
/// `record_run` reads only the digest of the last run's keys, and writes only what changed.
#[test]
fn record_run_writes_the_index_only_when_its_keys_changed() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let path = dir.path().join("v1/pipelines/p.json");
    let (k1, k2) = (key_input(1).key(), key_input(2).key());
    let identity = || {
        use std::os::unix::fs::MetadataExt as _;
        let m = fs::metadata(&path).unwrap();
        (m.ino(), m.modified().unwrap(), fs::read(&path).unwrap())
    };
    let run = [("s[value=1]", k1), ("s[value=2]", k2)];
    assert!(store.record_run("p", &run).unwrap(), "a new index");
    let written = identity();
    assert!(!store.record_run("p", &run).unwrap());
    assert_eq!(identity(), written, "nothing changed, nothing written");
    // A smaller run whose keys are all there: nothing to write either.
    assert!(!store.record_run("p", &run[..1]).unwrap());
    assert_eq!(identity(), written);
    // A changed key is written, and the others kept.
    let k3 = key_input(3).key();
    assert!(store.record_run("p", &[("s[value=1]", k3)]).unwrap());
    let index = store.load_index("p");
    assert_eq!(index.instances["s[value=1]"], k3);
    assert_eq!(index.instances["s[value=2]"], k2);

    // The digest vouches only for the file it is in: an index without it (an older one, or one
    // an older binary rewrote) is read in full, and gets it once.
    let mut old = store.load_index("p");
    old.last_run = None;
    old.instances.insert("s[value=1]".into(), k1);
    store.save_index("p", &old).unwrap();
    assert!(store.record_run("p", &run).unwrap(), "the digest added");
    assert_eq!(
        store.load_index("p").last_run,
        Some(ablate_cache::PipelineIndex::digest_of(&run))
    );
    let written = identity();
    assert!(!store.record_run("p", &run).unwrap());
    assert_eq!(identity(), written);
    // Laid out otherwise (by hand, another tool): read in full, and as good.
    let doc: serde_json::Value = serde_json::from_slice(&fs::read(&path).unwrap()).unwrap();
    fs::write(&path, serde_json::to_vec_pretty(&doc).unwrap()).unwrap();
    let written = identity();
    assert!(!store.record_run("p", &run).unwrap());
    assert_eq!(identity(), written);
    // A digest that says these keys while the instances say others (a hand edit) is trusted
    // only as far as its own file: the keys are what `load_index` reads.
    let mut edited = store.load_index("p");
    edited.instances.insert("s[value=2]".into(), k3);
    edited.last_run = None;
    store.save_index("p", &edited).unwrap();
    assert!(store.record_run("p", &run).unwrap());
    assert_eq!(store.load_index("p").instances["s[value=2]"], k2);
}

/// Reads an entry's manifest as JSON, lets `edit` change it, writes it back.
fn edit_manifest(store: &Store, key: &InstanceKey, edit: impl FnOnce(&mut serde_json::Value)) {
    let path = store.entry_dir(key).join("manifest.json");
    let mut doc: serde_json::Value = serde_json::from_slice(&fs::read(&path).unwrap()).unwrap();
    edit(&mut doc);
    fs::write(&path, serde_json::to_vec_pretty(&doc).unwrap()).unwrap();
}

#[test]
fn an_edited_manifest_metric_is_caught_by_lookup_and_verify() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let key = put(&store, 1, &[("a.txt", b"hello")]);
    // Reformatting the manifest (here: pretty-printed) changes nothing.
    edit_manifest(&store, &key, |_| {});
    assert!(matches!(store.lookup(&key), Lookup::Hit(_)));
    edit_manifest(&store, &key, |m| m["metrics"][0]["value"] = json!(0.99));
    for mode in [VerifyMode::Fast, VerifyMode::Full] {
        assert!(
            matches!(store.verify(&key, mode), Lookup::Invalid(why) if why.contains("changed after it was written")),
            "{mode:?}"
        );
    }
}

#[test]
fn a_manifest_naming_paths_outside_its_entry_is_invalid_even_with_a_good_checksum() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let key = put(&store, 1, &[("a.txt", b"hello")]);
    let reseal = |doc: &mut serde_json::Value| {
        let mut m: Manifest = serde_json::from_value(doc.clone()).unwrap();
        m.checksum = None;
        m.checksum = Some(m.compute_checksum());
        *doc = serde_json::to_value(m).unwrap();
    };
    for publish in [
        "/etc/passwd",
        "../../../etc/passwd",
        "a.txt/../../x",
        "missing.md",
    ] {
        edit_manifest(&store, &key, |m| {
            m["publish"] = json!([publish]);
            reseal(m);
        });
        assert!(
            matches!(store.verify(&key, VerifyMode::Fast), Lookup::Invalid(why) if why.contains("publishes")),
            "{publish}"
        );
    }
    edit_manifest(&store, &key, |m| {
        m["publish"] = json!([]);
        m["outputs"][0]["path"] = json!("../a.txt");
        reseal(m);
    });
    assert!(
        matches!(store.verify(&key, VerifyMode::Full), Lookup::Invalid(why) if why.contains("outside the entry"))
    );
}

#[test]
fn publishing_a_file_the_op_did_not_write_is_refused_at_commit() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let input = key_input(1);
    let tmp = store.begin(&input.key()).unwrap();
    fs::write(tmp.dir().join("a.md"), b"x").unwrap();
    let mut m = manifest(&input);
    m.publish = vec!["../b.md".into()];
    let err = tmp.commit(m).unwrap_err();
    assert!(err.to_string().contains("../b.md"), "{err}");
    assert!(matches!(store.lookup(&input.key()), Lookup::Miss));
}

#[test]
fn a_legacy_manifest_without_checksum_is_still_served() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let key = put(&store, 1, &[("a.txt", b"hello")]);
    edit_manifest(&store, &key, |m| {
        m["format"] = json!(1);
        m.as_object_mut().unwrap().remove("checksum");
    });
    assert!(matches!(store.verify(&key, VerifyMode::Full), Lookup::Hit(m) if m.format == 1));
    // Format 2 without its checksum is not legacy: it was edited.
    edit_manifest(&store, &key, |m| m["format"] = json!(2));
    assert!(matches!(store.lookup(&key), Lookup::Invalid(why) if why.contains("no checksum")));
}

#[test]
fn what_an_op_reads_is_hashed_even_when_size_and_mtime_were_kept() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let key = put(&store, 1, &[("a.txt", b"hello"), ("b.txt", b"fine")]);
    assert_eq!(
        store.verified_output(&key, "a.txt").unwrap(),
        Some(store.entry_dir(&key).join("a.txt"))
    );
    assert_eq!(store.verified_output(&key, "nope.txt").unwrap(), None);
    let file = store.entry_dir(&key).join("a.txt");
    overwrite_keeping_mtime(&file, b"HELLO");
    // The fast lookup trusts size and mtime (documented); reading the file checks its hash.
    assert!(matches!(store.lookup(&key), Lookup::Hit(_)));
    let err = store.verified_output(&key, "a.txt").unwrap_err();
    assert!(err.contains("SHA-256"), "{err}");
    assert!(store.verified_output(&key, "b.txt").unwrap().is_some());
}

#[test]
fn gc_never_follows_a_link_out_of_the_cache() {
    let dir = tempfile::tempdir().unwrap();
    let outside = tempfile::tempdir().unwrap();
    let precious = outside.path().join("precious");
    fs::create_dir(&precious).unwrap();
    fs::write(precious.join("thesis.tex"), b"years of work").unwrap();
    fs::write(outside.path().join("0000.lock"), b"").unwrap();
    let store = Store::open(dir.path()).unwrap();
    let key = put(&store, 1, &[("a", b"1")]);
    for sub in ["tmp", "failed", "locks"] {
        let d = dir.path().join("v1").join(sub);
        fs::remove_dir_all(&d).unwrap();
        std::os::unix::fs::symlink(outside.path(), &d).unwrap();
    }
    // A bucket linked out of the cache is not an entry of it either.
    std::os::unix::fs::symlink(outside.path(), dir.path().join("v1/zz")).unwrap();
    let report = store.gc(None, false).unwrap();
    assert!(
        precious.join("thesis.tex").exists(),
        "gc deleted outside the cache"
    );
    assert!(outside.path().join("0000.lock").exists());
    assert_eq!(report.refused.len(), 3, "{:?}", report.refused);
    assert!(
        report.refused[0].contains("symbolic link"),
        "{:?}",
        report.refused
    );
    assert_eq!(store.keys().unwrap(), vec![key]);
}

#[test]
fn a_stray_file_in_tmp_is_a_leftover_not_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    put(&store, 1, &[("a", b"1")]);
    fs::write(dir.path().join("v1/tmp/stray"), b"junk").unwrap();
    fs::write(dir.path().join("v1/failed/stray"), b"junk").unwrap();
    // An index a killed writer left half-written (pid 0 is never a user process).
    fs::write(dir.path().join("v1/pipelines/p.tmp.0.3"), b"{").unwrap();
    fs::write(dir.path().join("v1/pipelines/p.json"), b"{}").unwrap();
    let report = store.gc(None, false).unwrap();
    assert_eq!(report.leftovers, 3, "{report:?}");
    assert_eq!(fs::read_dir(dir.path().join("v1/tmp")).unwrap().count(), 0);
    assert!(dir.path().join("v1/pipelines/p.json").exists());
}

#[test]
fn a_run_removes_the_temp_dirs_of_dead_writers_only() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let key = key_input(1).key();
    // pid 0 is never a user process: its writer is dead. This process's own entry is live.
    let dead = dir.path().join(format!("v1/tmp/{}.0.7", key.to_hex()));
    fs::create_dir_all(&dead).unwrap();
    let live = store.begin(&key).unwrap();
    assert_eq!(store.remove_dead_temps(), 1);
    assert!(!dead.exists());
    assert!(live.dir().exists());
}

#[test]
fn a_checksum_does_not_depend_on_whether_it_is_set() {
    let input = key_input(1);
    let mut m = manifest(&input);
    m.metrics.push(Metric::new("tiny", 1e-300));
    m.metrics.push(Metric::new("third", 1.0 / 3.0));
    let bare = m.compute_checksum();
    m.checksum = Some(bare);
    assert_eq!(m.compute_checksum(), bare);
    // Read back from its text, it checks out.
    let back: Manifest = serde_json::from_slice(&serde_json::to_vec(&m).unwrap()).unwrap();
    assert_eq!(back.compute_checksum(), bare);
}

#[test]
fn gc_keeps_the_checkpoints_of_unfinished_computations_only() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let done = put(&store, 1, &[("a", b"1")]);
    let unfinished = key_input(2).key();
    let unwanted = key_input(3).key();
    for key in [done, unfinished, unwanted] {
        fs::create_dir_all(store.checkpoint_dir(&key)).unwrap();
        fs::write(store.checkpoint_dir(&key).join("state"), b"step 3").unwrap();
    }
    store.gc(None, false).unwrap();
    assert!(
        !store.checkpoint_dir(&done).exists(),
        "its entry is committed"
    );
    assert!(store.checkpoint_dir(&unfinished).exists());
    // Held by an attempt that is running: left alone.
    let held = store.try_lock(&unwanted).unwrap().unwrap();
    let keep: HashSet<_> = [done, unfinished].into();
    store.gc(Some(&keep), false).unwrap();
    assert!(store.checkpoint_dir(&unwanted).exists());
    drop(held);
    store.gc(Some(&keep), false).unwrap();
    assert!(
        !store.checkpoint_dir(&unwanted).exists(),
        "no pipeline given wants it"
    );
    assert!(store.checkpoint_dir(&unfinished).exists());
}

// --- `lookup_all` and the index of verified entries (#21) ----------------------------------------

fn hits(store: &Store, keys: &[InstanceKey]) -> Vec<std::sync::Arc<CachedEntry>> {
    store
        .lookup_all(keys)
        .into_iter()
        .zip(keys)
        .map(|(lookup, key)| match lookup {
            Lookup::Hit(entry) => entry,
            other => panic!("{key}: {other:?}"),
        })
        .collect()
}

/// Overwrites `from` with `to` (same length) inside `file`, putting the mtime back.
fn edit_in_place(file: &std::path::Path, from: &str, to: &str) {
    let text = fs::read_to_string(file).unwrap();
    assert_eq!(from.len(), to.len());
    assert!(text.contains(from), "{from:?} not in {text}");
    overwrite_keeping_mtime(file, text.replacen(from, to, 1).as_bytes());
}

/// A no-op rerun of 10,000 cached instances read, parsed and checksummed 10,000 manifests.
/// Through the index, a hit whose files are unchanged reads its manifest only when asked, and
/// then refuses one that changed since.
#[test]
fn lookup_all_serves_unchanged_entries_through_the_index_and_reads_manifests_when_asked() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let keys: Vec<InstanceKey> = (0..3)
        .map(|x| put(&store, x, &[("a.txt", b"hello"), ("d/b.txt", b"x")]))
        .collect();
    let first = hits(&store, &keys);
    for key in &keys {
        let shard = dir.path().join("v1/verified").join(&key.to_hex()[..2]);
        assert!(shard.is_file(), "{} has no index file", shard.display());
    }
    let second = hits(&store, &keys);
    for ((a, b), key) in first.iter().zip(&second).zip(&keys) {
        assert_eq!(b.key(), *key);
        assert_eq!(a, b);
        let Lookup::Hit(m) = store.lookup(key) else {
            panic!()
        };
        assert_eq!(*b.manifest().unwrap(), *m);
        assert_eq!(b.started_at_us(), m.started_at_us);
        assert!(!b.publishes());
    }
    // Asked for after an edit, the manifest is refused rather than swapped in.
    let later = hits(&store, &keys[..1]);
    edit_manifest(&store, &keys[0], |m| m["metrics"][0]["value"] = json!(0.99));
    let err = later[0].manifest().unwrap_err();
    assert!(
        err.to_string()
            .contains("changed after its entry was verified"),
        "{err}"
    );
    assert!(
        matches!(&store.lookup_all(&keys[..1])[0], Lookup::Invalid(why) if why.contains("changed after it was written"))
    );
}

#[test]
fn the_index_trusts_nothing_that_changed_since_its_check() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let keys: Vec<InstanceKey> = (0..6)
        .map(|x| put(&store, x, &[("a.txt", b"hello")]))
        .collect();
    hits(&store, &keys);
    hits(&store, &keys);
    let entry = |i: usize| store.entry_dir(&keys[i]);

    // 0: a same-size edit of the manifest with its mtime put back.
    edit_in_place(&entry(0).join("manifest.json"), "0.5", "0.6");
    // 1: an output of another size.
    fs::write(entry(1).join("a.txt"), b"hello!").unwrap();
    // 2: an output touched, its content the same: re-hashed and still good.
    fs::File::options()
        .write(true)
        .open(entry(2).join("a.txt"))
        .unwrap()
        .set_modified(std::time::SystemTime::now() - std::time::Duration::from_secs(60))
        .unwrap();
    // 3: the entry removed.
    fs::remove_dir_all(entry(3)).unwrap();
    // 4: the entry replaced by another computation, and the index file of its bucket put back
    // as it was (a concurrent run writing what it read before the replacement).
    let shard = dir.path().join("v1/verified").join(&keys[4].to_hex()[..2]);
    let stale = fs::read(&shard).unwrap();
    let mut again = manifest(&key_input(4));
    again.started_at_us = 77;
    let tmp = store.begin(&keys[4]).unwrap();
    fs::write(tmp.dir().join("a.txt"), b"HELLO").unwrap();
    tmp.commit_replacing(again).unwrap();
    fs::write(&shard, &stale).unwrap();

    let found = store.lookup_all(&keys);
    assert!(
        matches!(&found[0], Lookup::Invalid(why) if why.contains("changed after it was written")),
        "{:?}",
        found[0]
    );
    assert!(
        matches!(&found[1], Lookup::Invalid(why) if why.contains("bytes")),
        "{:?}",
        found[1]
    );
    assert!(matches!(&found[2], Lookup::Hit(_)), "{:?}", found[2]);
    assert!(matches!(&found[3], Lookup::Miss), "{:?}", found[3]);
    match &found[4] {
        Lookup::Hit(e) => {
            assert_eq!(e.started_at_us(), 77);
            assert_eq!(e.manifest().unwrap().started_at_us, 77);
        }
        other => panic!("{other:?}"),
    }
    assert!(matches!(&found[5], Lookup::Hit(_)));
    // The same again, now with the index brought up to date.
    let found = store.lookup_all(&keys);
    assert!(matches!(&found[0], Lookup::Invalid(_)));
    assert!(matches!(&found[1], Lookup::Invalid(_)));
    assert!(matches!(&found[2], Lookup::Hit(_)));
    assert!(matches!(&found[3], Lookup::Miss));
    assert!(matches!(&found[4], Lookup::Hit(e) if e.started_at_us() == 77));
}

/// What the fast lookup trusts (sizes and mtimes of outputs), the index trusts, no more.
#[test]
fn through_the_index_a_same_size_output_edit_is_still_caught_when_read() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let key = put(&store, 1, &[("a.txt", b"hello")]);
    hits(&store, &[key]);
    overwrite_keeping_mtime(&store.entry_dir(&key).join("a.txt"), b"HELLO");
    hits(&store, &[key]);
    assert!(store.verified_output(&key, "a.txt").is_err());
    assert!(matches!(
        store.verify(&key, VerifyMode::Full),
        Lookup::Invalid(_)
    ));
}

#[test]
fn a_cache_that_cannot_take_the_index_still_serves_hits() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    // Enough keys for the bucket listing and the threads.
    let keys: Vec<InstanceKey> = (0..300).map(|x| put(&store, x, &[])).collect();
    let absent: Vec<InstanceKey> = (1000..1010).map(|x| key_input(x).key()).collect();
    let all: Vec<InstanceKey> = keys.iter().chain(&absent).copied().collect();
    // `verified` is a file: no index can be written (as in a read-only cache).
    fs::write(dir.path().join("v1/verified"), b"not a directory").unwrap();
    for _ in 0..2 {
        let found = store.lookup_all(&all);
        assert!(found[..300].iter().all(|l| matches!(l, Lookup::Hit(_))));
        assert!(found[300..].iter().all(|l| matches!(l, Lookup::Miss)));
    }
    // A damaged index file is ignored, then rewritten.
    fs::remove_file(dir.path().join("v1/verified")).unwrap();
    hits(&store, &keys);
    let shard = dir.path().join("v1/verified").join(&keys[0].to_hex()[..2]);
    let mut bytes = fs::read(&shard).unwrap();
    bytes[40] ^= 0xff;
    fs::write(&shard, &bytes).unwrap();
    hits(&store, &keys);
    assert_ne!(fs::read(&shard).unwrap(), bytes);
    // Two lookups at once, each writing the index, agree.
    std::thread::scope(|s| {
        let a = s.spawn(|| hits(&store, &keys).len());
        let b = s.spawn(|| hits(&store, &keys).len());
        assert_eq!((a.join().unwrap(), b.join().unwrap()), (300, 300));
    });
}

#[test]
fn a_diverged_entry_keeps_its_status_and_a_done_one_writes_none() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let done = put(&store, 1, &[]);
    let text = fs::read_to_string(store.entry_dir(&done).join("manifest.json")).unwrap();
    // Manifests written before the status existed have the same bytes, hence checksums.
    assert!(!text.contains("status"), "{text}");

    let input = key_input(2);
    let tmp = store.begin(&input.key()).unwrap();
    let mut m = manifest(&input);
    m.status = ablate_cache::EntryStatus::diverged("loss", Some(5), f64::NAN);
    tmp.commit(m).unwrap();
    let Lookup::Hit(m) = store.lookup(&input.key()) else {
        panic!("a diverged entry is a result")
    };
    assert_eq!(m.status.name(), "diverged");
    assert_eq!(m.status.to_string(), "diverged: `loss` = NaN at step 5");
}

/// The scheduler needs a cached entry's status at once: the index keeps it, so a diverged
/// entry served without reading its manifest is still diverged.
#[test]
fn an_entry_served_through_the_index_keeps_its_status() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let input = key_input(2);
    let tmp = store.begin(&input.key()).unwrap();
    let mut m = manifest(&input);
    m.status = ablate_cache::EntryStatus::diverged("loss", Some(5), f64::NAN);
    tmp.commit(m).unwrap();
    let done = put(&store, 1, &[]);
    for _ in 0..2 {
        let found = hits(&store, &[input.key(), done]);
        assert_eq!(
            found[0].status().to_string(),
            "diverged: `loss` = NaN at step 5"
        );
        assert!(found[1].status().is_done());
    }
}
