SELECT 1; -- done
 /* really */ ;