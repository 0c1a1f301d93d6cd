/* partlog.c: being written */
