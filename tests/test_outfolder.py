import json
import os
import threading
import time

import pytest

from labelfix.errors import UsageError
from labelfix.repair.outfolder import (
    MARKER,
    Journal,
    OutputLock,
    check_output_folder,
    is_labelfix_output,
    mark,
    read_journals,
)


def test_only_labelfix_s_marker_or_report_makes_a_folder_labelfix_s(tmp_path):
    (tmp_path / "x.png").write_bytes(b"another dataset's label")
    (tmp_path / "report-qa.json").write_text(json.dumps({"rows": [], "qa": True}))  # anyone's report
    assert not is_labelfix_output(tmp_path)
    with pytest.raises(UsageError, match="labelfix did not write"):
        check_output_folder(tmp_path)
    (tmp_path / MARKER).write_text("something else")  # a file of that name that labelfix did not write
    assert not is_labelfix_output(tmp_path)
    (tmp_path / MARKER).unlink()
    mark(tmp_path)
    assert is_labelfix_output(tmp_path)
    check_output_folder(tmp_path)


def test_a_report_labelfix_wrote_is_recognised(tmp_path):
    (tmp_path / "x.png").write_bytes(b"")
    (tmp_path / "report.json").write_text(json.dumps({"format": "labelfix-report", "rows": []}))
    assert is_labelfix_output(tmp_path)


def test_a_second_run_is_refused_naming_the_process_and_shards_of_one_run_work_together(tmp_path):
    with OutputLock(tmp_path, None):
        with pytest.raises(UsageError, match=f"another labelfix run \\(process {os.getpid()}\\)"):
            OutputLock(tmp_path, None).__enter__()
        with pytest.raises(UsageError, match="another labelfix run"):
            OutputLock(tmp_path, (0, 2)).__enter__()  # a shard beside a whole run
    with OutputLock(tmp_path, (0, 2)), OutputLock(tmp_path, (1, 2)):
        with pytest.raises(UsageError, match="another labelfix run"):
            OutputLock(tmp_path, (0, 2)).__enter__()  # the same shard twice
        with pytest.raises(UsageError, match="another labelfix run"):
            OutputLock(tmp_path, None).__enter__()  # a whole run beside its shards
    with OutputLock(tmp_path, None):  # all released
        pass


def test_a_shard_waits_out_another_shard_probing_the_whole_run_lock(tmp_path):
    """Two shards started at once both probe the whole run's lock; a probe is not a whole run."""
    from filelock import FileLock

    held = threading.Event()

    def probe():  # what the other shard's probe holds for a moment
        with FileLock(str(tmp_path / ".labelfix.lock"), timeout=0):
            held.set()
            time.sleep(0.2)

    other = threading.Thread(target=probe)
    other.start()
    held.wait()
    with OutputLock(tmp_path, (0, 2)):
        pass
    other.join()


def test_the_journal_keeps_rows_as_they_were_written_and_drops_a_torn_last_line(tmp_path):
    journal = Journal(tmp_path, None, {"policy": "fill"}, fresh=True)
    journal.append({"file": "a.png", "status": "repaired"})
    journal.append({"file": "b.png", "status": "unchanged"})
    journal.close()
    with open(journal.path, "a") as f:
        f.write('{"file": "c.png", "stat')  # a crash in the middle of a line
    entry, = read_journals(tmp_path)
    assert entry.settings == {"policy": "fill"}
    assert entry.rows == {"a.png": {"file": "a.png", "status": "repaired"},
                          "b.png": {"file": "b.png", "status": "unchanged"}}
    resumed = Journal(tmp_path, None, {"policy": "fill"}, fresh=False)  # the next run goes on after it
    resumed.append({"file": "c.png", "status": "repaired"})
    resumed.close()
    assert set(read_journals(tmp_path)[0].rows) == {"a.png", "b.png", "c.png"}
    Journal(tmp_path, None, {"policy": "replace"}, fresh=True).close()
    assert read_journals(tmp_path)[0].rows == {}
